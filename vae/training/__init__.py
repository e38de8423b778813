"""Training: the pure compiled step and chunk (`step`, `optim`, `sharding`), the host loop
for one or many members (`loop`, `members`), what its evaluations compute per example and
the importance-weighted log-likelihood (`estimates`, shared with the offline report), the
pictures it writes (`plots`), one run's life in its workdir (`run`, `run_dir`, `run_record`,
`metrics_io`, `checkpointing`, `interrupts`) and the checks and measurements around them
(`validation`, `memory`, `progress`, `device_timeline`, `profiling`). The entry point is
`vae.training.loop.train_and_evaluate(config, workdir)`."""
