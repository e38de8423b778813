"""Pictures of a trained model's latent space: python scripts/visualize.py --workdir DIR --what W --out FILE.

  manifold, scatter, interpolation, traversal, samples, reconstructions: see the
  list in vae/reporting/figures.py
  all             every figure above, OUT's stem + '_' + name + suffix
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('drawing', 'rerun the same command')

import vae  # pylint: disable=g-import-not-at-top
from vae.commands import cli
from vae.reporting import figures


MAX_GRID = 200  # 40,000 decoded images, ~125 MB of 28x28 floats


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--workdir', required=True, help='a training workdir')
  parser.add_argument('--what', required=True, choices=figures.WHAT + ('all',),
                      help='which figure')
  parser.add_argument('--out', required=True,
                      help='figure path (.png); with --what all, one file per figure: OUT_STEM_<what>.png')
  parser.add_argument('--checkpoint', default='best', help='best, latest or a step number')
  parser.add_argument('--num_examples', type=cli.positive_int, default=5000,
                      help='test images encoded for the latent-space figures')
  parser.add_argument('--grid', type=cli.int_between(1, MAX_GRID), default=15,
                      help=f'images per side of a manifold grid (1..{MAX_GRID}: the grid '
                           'decodes its square, all at once)')
  args = parser.parse_args(argv)

  def work():
    model = vae.load(args.workdir, args.checkpoint)
    images, labels = model.load_split('test')
    images, labels = images[:args.num_examples], labels[:args.num_examples]
    out = pathlib.Path(args.out)
    for what in (figures.WHAT if args.what == 'all' else (args.what,)):
      path = out if args.what != 'all' else out.with_name(f'{out.stem}_{what}{out.suffix}')
      figures.draw(what, model, images, labels, path, args.grid)
      print(path)

  return cli.run(work, args.out)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
