"""Runs a config's sweep: python scripts/sweep.py --config configs/x.py[:arg] --workdir ROOT.

The checkout's entry point of `vae-sweep` (vae/commands/sweep.py, which holds the flags,
the --help text and `main(argv)`); `python scripts/sweep.py --help` lists them.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.commands.sweep import main, run  # pylint: disable=g-import-not-at-top,unused-import

if __name__ == '__main__':
  run()
