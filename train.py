"""Trains a VAE: python train.py --config configs/default.py --workdir runs/default.

The checkout's entry point of `vae-train` (vae/commands/train.py, which holds the flags,
the --help text and `main(argv)`); `python train.py --help` lists them.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

from vae.training import interrupts

if __name__ == '__main__':  # a signal while the libraries load: one line, no traceback.
  interrupts.exit_on_signals('training', 'no step had been taken yet: rerun the same command '
                             'to start')

from vae.commands.train import main, run  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import

if __name__ == '__main__':
  run()
