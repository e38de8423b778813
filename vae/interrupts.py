"""SIGTERM and SIGINT for a command line before (or without) a training loop's own handling.

`exit_on_signals` makes either signal print one line on stderr and exit at once with
128 + the signal (143 for SIGTERM, 130 for SIGINT): during imports, setup, evaluation or
sampling, where nothing is half-saved (every file the library writes is written whole, by
a rename, or not at all). Python runs a handler between bytecodes of the main thread, so a
signal that arrives during an XLA compilation or one long device call is answered when that
call returns. Training replaces these handlers with its own (vae/run_dir.py: stop at the
chunk boundary, save, exit 0). This module imports nothing heavy, so a command installs it
before it loads jax.
"""

import os
import signal
import sys


def exit_on_signals(what, fix):
  """Installs the handlers: 'error: <what> interrupted by SIGTERM; <fix>', then the exit."""

  def handler(signum, _frame):
    print(f'error: {what} interrupted by {signal.Signals(signum).name}; {fix}',
          file=sys.stderr, flush=True)
    os._exit(128 + signum)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)
