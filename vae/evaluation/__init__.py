"""Evaluation in nats: what every evaluation computes per example and the importance-weighted
log-likelihood (`estimates`), the offline report of scripts/evaluate.py (`report`), the
latent space's measures (`latent_space`), trained models as Python objects (`trained`,
behind `vae.load`) and the gradient estimators' variance study (`gradient_estimators`)."""
