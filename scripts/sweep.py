"""Runs a config's sweep: python scripts/sweep.py --config configs/x.py[:arg] --workdir ROOT.

  --mode sequential  members one after another in this process (default)
  --mode processes   members as separate train.py processes, --parallel at a time
  --mode vmap        members that differ only in beta, free bits, warm-up, lr,
                     seed or latent size train together in one compiled program
                     (vae/loop.py: train_members); others are grouped by what they share
  --dry_run          print the members and their directories; run nothing

Each member runs into ROOT/<name>/ (name from its overrides, e.g.
`latent_dim=2,beta=0.5,seed=0`) with the files of a single run. Finished
members are skipped, interrupted ones resume, and ROOT/sweep.json records each
member's overrides and status (vae/sweeps.py). Then: scripts/summarize.py ROOT
and scripts/plot_curves.py ROOT --out FILE.
"""

import argparse
import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae import checkpointing, config_lib, data, sweeps  # pylint: disable=g-import-not-at-top


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True, help='configs/x.py[:arg] with get_sweep')
  parser.add_argument('--workdir', required=True, help='sweep root directory')
  parser.add_argument('--mode', default='sequential', choices=('sequential', 'processes', 'vmap'))
  parser.add_argument('--parallel', type=int, default=2, help='processes at a time')
  parser.add_argument('--dry_run', action='store_true')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                      force=True)
  logging.getLogger('absl').setLevel(logging.WARNING)
  try:
    record = sweeps.run_sweep(args.config, args.workdir, args.mode, args.parallel, args.dry_run)
  except (config_lib.ConfigError, data.DataError, checkpointing.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not args.dry_run:
    members = record.data['members']
    failed = [m['name'] for m in members if m['status'] == 'failed']
    interrupted = [m['name'] for m in members if m['status'] == 'interrupted']
    print(f'sweep {args.workdir}: {len(members)} members, failed: {failed or "none"}, '
          f'interrupted: {interrupted or "none"}')
    return 1 if failed else 0
  return 0


if __name__ == '__main__':
  sys.exit(main())
