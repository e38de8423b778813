"""The multi-host supervisor: a multi-process training command runs as its child, and a lost
peer becomes one line (exit 5) instead of the distributed runtime's core dump."""

import re
import signal
import subprocess
import sys
import threading

from vae import settings
from vae.commands import cli
from vae.training import interrupts


_FATAL = 'JAX distributed service detected fatal errors'


def _die_with_parent():
  """In the child: SIGKILL when the supervising parent dies (Linux prctl PR_SET_PDEATHSIG)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)
  except OSError:
    pass


def supervise(cmd, process_id):
  """Runs a multi-process training command as a child and reports a lost peer in one line.

  When another process dies, JAX's distributed runtime aborts the survivors from a
  background thread (a core dump text, after its heartbeat timeout) where Python cannot
  catch it. The child's stderr passes through until that abort starts; then the dump is
  held back and one line names the lost process. Signals are forwarded to the child.

  Returns:
    the exit code: the child's, or EXIT_LOST_PROCESS.
  """
  env = dict(settings.command('vae')[1], **{settings.SUPERVISED_ENV: '1', 'PYTHONUNBUFFERED': '1'})
  proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                          preexec_fn=_die_with_parent)
  interrupts.suspend()  # the child answers signals; this process only forwards them
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda signum, _: proc.send_signal(signum))
  held = []

  def pump():
    for line in proc.stderr:
      if held or _FATAL in line:
        held.append(line)
      else:
        sys.stderr.write(line)
        sys.stderr.flush()

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  code = proc.wait()
  reader.join(timeout=5)
  if not held and code >= 0:
    return code
  text = ''.join(held)
  task = re.search(r'[Tt]ask (\d+) heartbeat timeout', text)
  if task:
    lost = f'process {task.group(1)}'
  elif process_id != 0:
    lost = 'process 0 (the coordinator)'
  else:
    lost = 'another process'
  return cli.fail(f'lost {lost}: the JAX distributed service stopped this process '
              f'{process_id}; rerun the same command on every host (any number of processes) '
              'to resume from the last checkpoint', cli.EXIT_LOST_PROCESS)
