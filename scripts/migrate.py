"""Brings a workdir saved by an older version to the current layout: python scripts/migrate.py
--workdir W [--dry_run].

A run saved before the fields of config_lib.LEGACY_VALUES existed gets their values (the
ones it ran with) written into its config.json, and a checkpoint of the single-item layout is
saved again as params + state items with checksums (vae/training/migration.py); the run then
loads and resumes as it started. Loading or resuming such a workdir without it is refused with
one line naming this command. Prints each change; exit 0 (also when there is nothing to do),
2 for a workdir it cannot read.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('migrating', 'rerun the same command: it picks up where it stopped')

from vae import config_lib, errors  # pylint: disable=g-import-not-at-top
from vae.commands import cli  # pylint: disable=g-import-not-at-top
from vae.training import migration  # pylint: disable=g-import-not-at-top


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--workdir', required=True, help='a training workdir')
  parser.add_argument('--dry_run', action='store_true', help='print the changes; make none')
  args = parser.parse_args(argv)
  try:
    changes = migration.migrate(args.workdir, dry_run=args.dry_run)
  except (errors.CheckpointError, errors.ConfigError) as e:
    return cli.fail(e, cli.EXIT_BAD_INPUT)
  if not changes:
    print(f'{args.workdir} is current (schema version {config_lib.SCHEMA_VERSION}); '
          'nothing to do')
  for change in changes:
    print(('would change ' if args.dry_run else 'changed ') + change)
  return cli.EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
