"""Runs a config's sweep: python scripts/sweep.py --config configs/x.py[:arg] --workdir ROOT.

  --mode sequential  members one after another in this process (default)
  --mode processes   members as separate train.py processes, --parallel at a time
  --mode vmap        members that differ only in beta, free bits, warm-up, lr,
                     seed or latent size train together in one compiled program
                     (vae/loop.py: train_members); others are grouped by what they share
  --dry_run          print the members and their directories; run nothing
  --axis KEY=V1,V2   keep only the members whose KEY is one of the values (repeatable):
                     --axis model.latent_dim=2 --axis objective.beta=1,4 --axis seed=0
  --config.a.b=v     set a field for every member (recorded in sweep.json; a rerun with
                     other overrides is refused)

Each member runs into ROOT/<name>/ (name from its overrides, e.g.
`latent_dim=2,beta=0.5,seed=0`) with the files of a single run. Finished
members are skipped, interrupted ones resume, and ROOT/sweep.json records each
member's overrides and status (vae/sweeps.py). Then: scripts/summarize.py ROOT
and scripts/plot_curves.py ROOT --out FILE.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae import cli, sweeps  # pylint: disable=g-import-not-at-top


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True, help='configs/x.py[:arg] with get_sweep')
  parser.add_argument('--workdir', required=True, help='sweep root directory')
  parser.add_argument('--mode', default='sequential', choices=('sequential', 'processes', 'vmap'))
  parser.add_argument('--parallel', type=cli.positive_int, default=2, help='processes at a time')
  parser.add_argument('--dry_run', action='store_true')
  parser.add_argument('--axis', action='append', default=[], metavar='KEY=V1,V2',
                      help='keep only the members whose KEY is one of the values (repeatable)')
  args, rest = parser.parse_known_args(argv)
  overrides = {}
  for item in rest:  # --config.a.b=value: the same for every member
    key, eq, value = item.partition('=')
    if not key.startswith('--config.') or not eq:
      parser.error(f'unrecognized argument {item!r} (overrides are --config.a.b=value)')
    overrides[key[len('--config.'):]] = value
  axes = {}
  for item in args.axis:
    key, eq, values = item.partition('=')
    if not eq or not values:
      parser.error(f'--axis {item!r}: write --axis KEY=V1,V2')
    axes[key] = values.split(',')

  def work():
    record = sweeps.run_sweep(args.config, args.workdir, args.mode, args.parallel, args.dry_run,
                              axes=axes, config_overrides=overrides)
    if args.dry_run:
      return cli.EXIT_OK
    members = record.data['members']
    failed = [m['name'] for m in members if m['status'] == 'failed']
    interrupted = [m['name'] for m in members if m['status'] == 'interrupted']
    print(f'sweep {args.workdir}: {len(members)} members, failed: {failed or "none"}, '
          f'interrupted: {interrupted or "none"}')
    return cli.EXIT_FAILED if failed else cli.EXIT_OK

  return cli.run(work, args.workdir)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
