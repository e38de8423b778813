"""SIGTERM and SIGINT for a command line before (or without) a training loop's own handling.

`exit_on_signals` makes either signal print one line on stderr and exit with 128 + the
signal (143 for SIGTERM, 130 for SIGINT), at once: during imports, setup, an XLA
compilation, a long evaluation or sampling call, where nothing is half-saved. Python runs
a signal handler only between bytecodes of the main thread, which can sit in one XLA call
for minutes; so the answer comes from a watcher thread that Python's own C-level handler
wakes (`signal.set_wakeup_fd`), whatever the main thread is doing. Training suspends it
while its own handling (vae/training/run_dir.py `Preemption`: stop at the chunk boundary, save,
exit 0) is installed, and resumes it after. This module imports nothing heavy, so a command
installs it before it loads jax.
"""

import os
import signal
import sys
import threading

_WATCHED = (signal.SIGTERM, signal.SIGINT)
_state = {'installed': False, 'active': False, 'what': '', 'fix': ''}


def _exit(signum):
  print(f'error: {_state["what"]} interrupted by {signal.Signals(signum).name}; '
        f'{_state["fix"]}', file=sys.stderr, flush=True)
  os._exit(128 + signum)


def _handler(signum, _frame):
  if _state['active']:
    _exit(signum)


def _watch(read_fd):
  while True:
    data = os.read(read_fd, 64)
    if not data:
      return
    for signum in data:
      if _state['active'] and signum in _WATCHED:
        _exit(signum)


def exit_on_signals(what, fix):
  """From now on SIGTERM / SIGINT print 'error: <what> interrupted by SIGTERM; <fix>' and
  exit 143 / 130. Call it from the main thread, first thing; a signal that a command held
  back from its first instruction (`signal.pthread_sigmask(SIG_BLOCK, ...)`, before it
  imports this package) arrives now."""
  _state.update(what=what, fix=fix, active=True)
  for sig in _WATCHED:
    signal.signal(sig, _handler)
  if not _state['installed']:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd,), daemon=True,
                     name='vae-interrupts').start()
    _state['installed'] = True
  signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)


def suspend():
  """While training handles the signals itself (its handler replaces ours meanwhile)."""
  _state['active'] = False


def resume():
  """After training put the previous handlers back."""
  _state['active'] = _state['installed']
