"""Sweeps: expanding a config over axes into named members, grouping them for vmap, and
running them sequentially, vmapped, as processes or as a SLURM array (`runner`), with the
sweep root's record, sweep.json (`record`), and the evaluation of every finished member
(`evaluate`)."""
