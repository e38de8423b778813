"""The command lines that start runs, as entry points of the package.

`vae-train` (`python -m vae.commands.train`, or `python train.py` in a checkout) and
`vae-sweep` (`python -m vae.commands.sweep`, or `python scripts/sweep.py`) are console
scripts of pyproject.toml, so that they, and the sweep members and SLURM tasks they start,
run from any working directory: a relative config path that does not exist there is looked
up in the installed `configs` package (`vae.sweeps.plan.resolve_config_spec`).
"""
