"""A results table of evaluated runs with paired differences: python scripts/compare_runs.py
[--sweep ROOT] [--row NAME=DIR[,DIR...] ...] [--reference NAME] [--out FILE].

Each DIR is a training workdir that scripts/evaluate.py evaluated (eval.json and eval.npz,
the per-image log p(x)); a row's DIRs are its seeds. Prints a markdown table: test log p(x)
(mean over seeds, sd over seeds), ELBO, KL and active units (per layer for two-layer
models), epochs and training minutes, and each row's difference to the reference row,
paired over the same test images (mean +- standard error), so a reader can tell which gaps
are real. A DIR may hold commas (a sweep member's directory, runs/table/prior=vamp,seed=0);
the same NAME given again adds DIRs to that row. --out writes the table and a JSON of the
rows beside it (FILE.json).

  python scripts/compare_runs.py --row standard=runs/fmnist_gated --row vamp=runs/fmnist_vamp
  python scripts/compare_runs.py --sweep runs/table --row "full protocol=runs/fmnist_gated"

--sweep ROOT makes one row per setting of a sweep (its members' overrides but the seed; the
evaluated members only, the others named on stderr), before the --row rows.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('the comparison', 'rerun the same command')

from vae.commands import cli  # pylint: disable=g-import-not-at-top
from vae.reporting import summaries


def _row(text):
  name, sep, dirs = text.partition('=')
  if not sep or not name or not dirs:
    raise ValueError(f'--row {text!r}: give NAME=DIR[,DIR...]')
  return name, _split_dirs(dirs)


def _split_dirs(text):
  """DIR[,DIR...] -> [DIR, ...], where a DIR may itself hold commas, as a sweep member's
  directory does (runs/table/prior=vamp,seed=0): pieces are joined until they name an
  existing directory. Pieces that name none stay apart, so the error names them."""
  dirs, current = [], None
  for piece in text.split(','):
    current = piece if current is None else f'{current},{piece}'
    if current and pathlib.Path(current).is_dir():
      dirs.append(current)
      current = None
  if current is not None:
    dirs.extend(d for d in current.split(',') if d)
  return dirs


def _merge(rows):
  """Rows given under the same NAME more than once are one row with all their DIRs."""
  merged = {}
  for name, dirs in rows:
    merged.setdefault(name, []).extend(dirs)
  return list(merged.items())


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--sweep', default=None, metavar='ROOT',
                      help='a row per setting of this sweep (its evaluated members, seeds '
                           'grouped), before any --row')
  parser.add_argument('--row', action='append', default=[], type=_row,
                      metavar='NAME=DIR[,DIR...]',
                      help='a row and its seeds (repeatable; the same NAME again adds seeds)')
  parser.add_argument('--reference', default=None, help='row to compare against (first)')
  parser.add_argument('--out', default='', help='also write the table here (and FILE.json)')
  args = parser.parse_args(argv)
  if args.sweep is not None:
    if not pathlib.Path(args.sweep).is_dir():
      return cli.fail(f'--sweep {args.sweep}: no such directory', cli.EXIT_BAD_INPUT)
    rows, missing = summaries.sweep_rows(args.sweep)
    if missing:
      print(f'not evaluated yet (left out): {", ".join(missing)}', file=sys.stderr)
    args.row = rows + args.row
  if not args.row:
    return cli.fail('nothing to compare: give --sweep ROOT (with evaluated members) or --row '
                    'NAME=DIR', cli.EXIT_BAD_INPUT)
  args.row = _merge(args.row)
  names = [n for n, _ in args.row]
  if args.reference is not None and args.reference not in names:
    return cli.fail(f'--reference {args.reference!r} is not a row; rows: {names}',
                    cli.EXIT_BAD_INPUT)

  def work():
    try:
      text, table = summaries.compare_rows(args.row, args.reference)
    except (FileNotFoundError, ValueError) as e:
      return cli.fail(str(e), cli.EXIT_BAD_INPUT)
    print(text, end='')
    if args.out:
      out = pathlib.Path(args.out)
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(text)
      out.with_suffix(out.suffix + '.json').write_text(json.dumps(table, indent=2) + '\n')
    return 0

  return cli.run(work, args.out)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
