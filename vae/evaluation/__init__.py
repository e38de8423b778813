"""Evaluation in nats of trained runs: the offline report of scripts/evaluate.py (`report`,
over the per-example estimates of `vae.training.estimates`), the latent space's measures
(`latent_space`), trained models as Python objects (`trained`, behind `vae.load`) and the
gradient estimators' variance study (`gradient_estimators`)."""
