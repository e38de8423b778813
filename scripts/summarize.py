"""One row per sweep member: python scripts/summarize.py ROOT.

Writes ROOT/summary.csv and ROOT/summary.md: each member's overrides, final and
best test ELBO (nats per example, from its metrics.jsonl), test KL and
reconstruction, active units, the importance-weighted NLL where
scripts/evaluate.py wrote eval.json, steps and wall time; then mean +- std over
seeds for members that differ only in seed.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('the summary', 'rerun the same command')

from vae.commands import cli  # pylint: disable=g-import-not-at-top
from vae.reporting import summaries


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('root', help='sweep root directory (holds sweep.json)')
  args = parser.parse_args(argv)

  def work():
    rows = summaries.summarize(args.root)
    print((pathlib.Path(args.root) / 'summary.md').read_text())
    return 0 if rows else 1

  return cli.run(work, args.root)


if __name__ == '__main__':
  sys.exit(main())
