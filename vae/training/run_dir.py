"""The run directory: its lock, its preparation, the resume-config check, preemption, done.json.

A workdir holds one run (see docs/training.md, "The workdir"). Before training:
`prepare_workdir` creates it (one line if it cannot be written), `WorkdirLock`
keeps a second trainer out, and `check_resume_config` refuses to continue a
run with a config that differs in anything but `config_lib.RESUMABLE` fields.
During training `Preemption` turns SIGTERM / SIGINT into a flag that all
processes agree on at a boundary. `write_done` records a run that ended
(finished or stopped early); `read_done` reads it back. The run's provenance (run.json) is
vae/training/run_record.py's.
"""

import fcntl
import errno
import json
import os
import pathlib
import signal
import stat

import jax
import numpy as np

from vae import config_lib
from vae.training import interrupts, metrics_io

DONE_FILE = 'done.json'
GROUP_FILE = 'members.json'  # a vmapped group's member configs


class WorkdirLock:
  """An exclusive flock on WORKDIR/.lock (or WORKDIR/`name`): a second holder fails with
  `in_use(owner pid)` as its one line. The kernel releases it when its process dies, so a
  requeued job is never blocked by its dead predecessor."""

  def __init__(self, workdir, name='.lock', in_use=None):
    self.path = pathlib.Path(workdir) / name
    try:
      # Never through a link: a .lock planted as a symlink would have us truncate its target.
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
      raise config_lib.ConfigError(f'cannot open the lock file {self.path} ({e.strerror}); it '
                                   'must be a plain file: remove it and rerun') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      os.close(fd)
      raise config_lib.ConfigError(f'the lock file {self.path} is not a plain file; remove it '
                                   'and rerun')
    self._f = os.fdopen(fd, 'r+')
    try:
      fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self._f.seek(0)
      owner = self._f.read().strip() or 'unknown'
      self._f.close()
      raise config_lib.ConfigError(
          in_use(owner) if in_use is not None else
          f'workdir {workdir} is in use by another trainer (pid {owner}); wait for it to '
          'finish or use another --workdir') from None
    self._f.seek(0)
    self._f.truncate()
    self._f.write(str(os.getpid()))
    self._f.flush()

  def release(self):
    fcntl.flock(self._f, fcntl.LOCK_UN)
    self._f.close()


def prepare_workdir(workdir):
  """Creates the workdir, or fails with one line if it cannot be written."""
  if not str(workdir).strip():
    raise config_lib.ConfigError('the workdir is empty; give the directory of the run')
  workdir = pathlib.Path(workdir)
  for sub_dir in ('checkpoints', 'images', 'tensorboard'):
    if (workdir / sub_dir).is_symlink():
      raise config_lib.ConfigError(f'{workdir / sub_dir} is a link, where the run keeps its own '
                                   'directory; move it away or use another --workdir')
    if (workdir / sub_dir).exists() and not (workdir / sub_dir).is_dir():
      raise config_lib.ConfigError(f'{workdir / sub_dir} is a file, where the run keeps a '
                                   'directory; move it away or use another --workdir')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write_test.{jax.process_index()}'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is not bad input: exit 4
      raise OSError(e.errno, f'no space left on {workdir}; free space, then rerun to resume',
                    str(workdir)) from None
    raise config_lib.ConfigError(f'cannot write to workdir {workdir} ({e.strerror}); choose a '
                                 'writable --workdir') from None
  return workdir


def check_resume_config(saved, current, workdir):
  """Raises ConfigError if a saved config (dict) differs from `current` in a fixed field."""
  diffs = config_lib.resume_differences(saved, current)
  if diffs:
    shown = ', '.join(f'{k}: {a!r} -> {b!r}' for k, a, b in diffs[:3])
    more = f' (+{len(diffs) - 3} more)' if len(diffs) > 3 else ''
    raise config_lib.ConfigError(
        f'workdir {workdir} holds a run with another config ({shown}{more}); only '
        f'{", ".join(config_lib.resumable_fields())} may change on resume: use a new --workdir')
  old, new = config_lib.flatten(saved), config_lib.flatten(current)
  schedule = old.get('optim.schedule')
  if (schedule in LENGTH_DEPENDENT_SCHEDULES
      and old.get('train.num_epochs') != new.get('train.num_epochs')):
    raise config_lib.ConfigError(
        f'workdir {workdir} was trained with optim.schedule={schedule}, whose learning rate '
        f'follows the run\'s length: train.num_epochs={old.get("train.num_epochs")} there, '
        f'{new.get("train.num_epochs")} now would change the rate of the steps still to come; '
        'keep num_epochs, or start a new --workdir')


# Learning-rate schedules whose value at a step depends on the run's total length.
LENGTH_DEPENDENT_SCHEDULES = ('cosine', 'warmup_cosine')


def check_workdir_config(workdir, current):
  """`check_resume_config` against WORKDIR/config.json, when the workdir has one."""
  path = pathlib.Path(workdir) / 'config.json'
  if path.exists():
    check_resume_config(read_json(path), current, workdir)


def read_json(path):
  """A JSON file of a workdir (a dict), or ConfigError naming it when it is damaged."""
  try:
    value = json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise config_lib.ConfigError(f'{path} is damaged ({type(e).__name__}); restore it, or '
                                 'remove the workdir to start over') from None
  if not isinstance(value, (dict, list)):
    raise config_lib.ConfigError(f'{path} is damaged (not a JSON object); restore it, or '
                                 'remove the workdir to start over')
  return value


def check_group_config(group_dir, member_configs):
  """`check_resume_config` for each member of a vmapped group against GROUP/members.json."""
  path = pathlib.Path(group_dir) / GROUP_FILE
  if not path.exists():
    return
  saved = read_json(path)
  if len(saved) != len(member_configs):
    raise config_lib.ConfigError(f'{group_dir} holds a group of {len(saved)} members, not '
                                 f'{len(member_configs)}; use a new sweep root')
  for s, m in zip(saved, member_configs):
    check_resume_config(s, m, group_dir)


def write_done(workdir, step, status, num_epochs):
  """Records a run that ended at `step` with `status` ('finished' or 'early_stopped')."""
  metrics_io.write_json(pathlib.Path(workdir) / DONE_FILE,
                        {'step': int(step), 'status': status, 'num_epochs': num_epochs})


def read_done(workdir):
  """The done record of a workdir (dict), or None when the run has not ended."""
  path = pathlib.Path(workdir) / DONE_FILE
  return read_json(path) if path.exists() else None


def is_done(workdir, num_epochs):
  """Whether the run ended (finished, or stopped early) at this configured length."""
  done = read_done(workdir)
  return done is not None and done.get('num_epochs') == num_epochs


class Preemption:
  """Turns SIGTERM / SIGINT into a flag checked at chunk boundaries."""

  def __init__(self):
    self.requested = None
    self._old = {}

  def install(self):
    interrupts.suspend()  # a command's exit-at-once answer (vae/training/interrupts.py) waits meanwhile
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = signal.Signals(signum).name

  def agreed(self):
    """Whether any process was signalled; all processes agree, so they stop at the same
    boundary (a process that stopped alone would leave the others in a collective)."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array(self.requested is not None))
    if np.any(flags) and self.requested is None:
      self.requested = 'SIGTERM'
    return self.requested

  def restore(self):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)
    interrupts.resume()
