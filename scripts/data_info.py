"""What a dataset name resolves to: python scripts/data_info.py NAME [SOURCE].

Prints the source, files, counts, shapes and pixel statistics that training
would use for `data.name=NAME` (the default config's other data fields).
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('reading the data', 'rerun the same command')

from configs import default  # pylint: disable=g-import-not-at-top
from vae.commands import cli
from vae.data import datasets


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('name', help='data.name, e.g. fashion_mnist, mnist, cifar10, synthetic')
  parser.add_argument('source', nargs='?', default='auto',
                      help='data.source: auto, idx, tfds, npz or synthetic')
  args = parser.parse_args(argv)
  dc = default.get_config().data
  with dc.unlocked():
    dc.name = args.name
    dc.source = args.source
  try:
    ds = datasets.load(dc)
  except datasets.DataError as e:
    return cli.fail(e, cli.EXIT_BAD_INPUT)
  for line in datasets.describe(ds):
    print(line)
  return 0


if __name__ == '__main__':
  sys.exit(main())
