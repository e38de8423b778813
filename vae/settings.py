"""Every environment variable the package reads, read here and nowhere else under vae/.

Other modules ask this one; the compute path (step, checkpointing, loop, members,
evaluation, models) receives what it needs as arguments, so what a run computed follows
from its config and the hooks passed down. docs/operations.md's "Environment variables" lists each:

  VAE_DATA_DIR                   where IDX files are searched first (`data_dir`)
  VAE_COMPILATION_CACHE          XLA's compilation cache directory, or off (`compilation_cache`)
  XDG_CACHE_HOME                 the default cache's parent (`compilation_cache`)
  XLA_FLAGS                      read and extended on import (`xla_flags`, `set_xla_flags`)
  SLURM_ARRAY_TASK_ID/_MIN/_COUNT, JOB_COMPLETION_INDEX   a sweep task's index (`array_task`)
  VAE_SUPERVISED                 set by the multi-host supervisor for its child (`supervised`)
  VAE_INJECT_NAN_AT_STEP, VAE_INJECT_KILL_DURING_SAVE, VAE_INJECT_KILL_DELAY_S,
  VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES, VAE_LOG_BATCH_SHARDING
                                 fault injection and diagnostics for the tests (`fault_hooks`)
  VAE_INJECT_IMPORT_DELAY_S      a sleep while the package imports (`inject_import_delay`)
"""

import dataclasses
import os
import pathlib
import signal
import sys
import threading

SUPERVISED_ENV = 'VAE_SUPERVISED'
COMPILATION_CACHE_ENV = 'VAE_COMPILATION_CACHE'


def environ():
  """A copy of the whole environment, for starting child processes."""
  return dict(os.environ)


def package_root():
  """The directory that holds the `vae` package (a checkout's root, for an editable install)."""
  return str(pathlib.Path(__file__).resolve().parents[1])


def command(module):
  """(argv prefix, environment) that start `python -m MODULE` of this package in a child
  process: this interpreter, and the directory that holds the `vae` package first on
  PYTHONPATH, so the child imports this very package from any working directory, installed
  or not."""
  root = package_root()
  env = environ()
  env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in env.get('PYTHONPATH', '').split(
      os.pathsep) if p and p != root])
  return [sys.executable, '-m', module], env


def data_dir():
  """$VAE_DATA_DIR, or '' when unset."""
  return os.environ.get('VAE_DATA_DIR', '')


def compilation_cache():
  """(the value of $VAE_COMPILATION_CACHE or '', the cache's parent directory)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.environ.get(COMPILATION_CACHE_ENV, ''), base


def xla_flags():
  return os.environ.get('XLA_FLAGS', '')


def set_xla_flags(flags):
  """Sets XLA_FLAGS for this process (XLA reads it when JAX opens its backends)."""
  os.environ['XLA_FLAGS'] = flags


def supervised():
  return os.environ.get(SUPERVISED_ENV) == '1'


def array_task():
  """(task index or None, task count or None) from a scheduler's array variables."""
  env = os.environ
  if 'SLURM_ARRAY_TASK_ID' in env:
    return (int(env['SLURM_ARRAY_TASK_ID']) - int(env.get('SLURM_ARRAY_TASK_MIN', 0)),
            int(env.get('SLURM_ARRAY_TASK_COUNT', 1)))
  if 'JOB_COMPLETION_INDEX' in env:
    return int(env['JOB_COMPLETION_INDEX']), None
  return None, None


@dataclasses.dataclass(frozen=True)
class FaultHooks:
  """Faults the reliability tests plant in child processes (docs/reliability.md); all off in
  normal runs, and then nothing of them is compiled or run.

  nan_at_step: the training batch becomes NaN at this step (compiled into the step).
  kill_during_save: SIGKILL `kill_delay_s` after a checkpoint save of this step begins.
  kill_between_member_saves: SIGKILL after the first member of a group saved this step and
    before the next one does.
  log_batch_sharding: log the batch's sharding inside the compiled step.
  """
  nan_at_step: int = -1
  kill_during_save: int = -1
  kill_delay_s: float = 0.02
  kill_between_member_saves: int = -1
  log_batch_sharding: bool = False

  def before_save(self, step):
    if self.kill_during_save >= 0 and int(step) == self.kill_during_save:
      threading.Timer(self.kill_delay_s, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()

  def between_member_saves(self, step):
    if self.kill_between_member_saves >= 0 and int(step) == self.kill_between_member_saves:
      os.kill(os.getpid(), signal.SIGKILL)


def inject_import_delay():
  """VAE_INJECT_IMPORT_DELAY_S: seconds the package's import sleeps (the tests' window for a
  signal that arrives while a command's libraries load)."""
  delay = float(os.environ.get('VAE_INJECT_IMPORT_DELAY_S', '0') or 0)
  if delay > 0:
    threading.Event().wait(delay)


def fault_hooks():
  """The FaultHooks that this process's environment asks for."""
  env = os.environ
  return FaultHooks(
      nan_at_step=int(env.get('VAE_INJECT_NAN_AT_STEP', '-1')),
      kill_during_save=int(env.get('VAE_INJECT_KILL_DURING_SAVE', '-1')),
      kill_delay_s=float(env.get('VAE_INJECT_KILL_DELAY_S', '0.02')),
      kill_between_member_saves=int(env.get('VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES', '-1')),
      log_batch_sharding=env.get('VAE_LOG_BATCH_SHARDING') == '1')
