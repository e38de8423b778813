"""ELBO curves and rate-distortion of a sweep: python scripts/plot_curves.py ROOT --out FILE.

FILE: lower bound per datapoint (nats) against training examples seen, on a
log axis (the layout of Kingma & Welling 2013, Figure 2), train (left) and
test (right), one line per setting (colour by latent size) with a band over
seeds (min to max, line at the mean; train as one mean per epoch), each panel its own y
range. FILE's stem + '_rate_distortion' + suffix: final test KL (rate) against
-reconstruction (distortion), the seed means joined across beta for each latent size, with
iso-ELBO lines. FILE's stem + '_test_elbo_vs_<field>' + suffix, for each field the sweep
varies: the final test ELBO against its values, mean +- sd over seeds.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('plotting', 'rerun the same command')


from vae.commands import cli  # pylint: disable=g-import-not-at-top
from vae.reporting import figures


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('root', help='sweep root directory (holds sweep.json)')
  parser.add_argument('--out', required=True,
                      help='figure path of the ELBO curves; the rate-distortion figure goes beside it')
  args = parser.parse_args(argv)
  for path in figures.sweep_curves(args.root, args.out)[:2]:
    print(path)
  for path in figures.metric_against_values(args.root, args.out):
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
