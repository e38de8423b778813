"""A run's provenance, WORKDIR/run.json: one entry per invocation (session) of a run.

Each entry records what a result depends on besides the config (`environment`: git commit
and dirty flag, command line, package versions, devices, processes, CPU, host, XLA flags,
sha256 of the data files), start and end times, the steps trained and how it ended, and
what the loop notes (the compiled step's options, the device timeline).
`training_seconds` sums the sessions' time, without the gaps between a stopped run and its
resumption.
"""

import datetime
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import socket
import subprocess
import sys
import time

import jax

from vae import config_lib, settings
from vae.training import metrics_io
from vae.training.run_dir import read_json


RUN_FILE = 'run.json'


def _git(*args):
  root = pathlib.Path(__file__).resolve().parents[1]
  try:
    out = subprocess.run(['git', '-C', str(root), *args], capture_output=True, text=True,
                         timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def _file_sha256(path):
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def environment(data_files=()):
  """What a result depends on besides the config: code, packages, machine, data files."""
  versions = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy'):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = {}
  for d in jax.devices():
    devices[d.device_kind] = devices.get(d.device_kind, 0) + 1
  cpu = None
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f
                  if line.startswith('model name')), None)
  status = _git('status', '--porcelain', '--untracked-files=no')
  return {'commit': _git('rev-parse', 'HEAD'), 'dirty': bool(status) if status is not None
          else None, 'command': [sys.executable] + sys.argv, 'python': platform.python_version(),
          'versions': versions, 'devices': devices, 'processes': jax.process_count(),
          'cpu': cpu or platform.processor(), 'host': socket.gethostname(),
          'xla_flags': settings.xla_flags(), 'imports': list(config_lib.PLUGINS),
          'data_files': {str(p): _file_sha256(p) for p in data_files if os.path.isfile(p)}}


def iso(seconds):
  """Unix seconds as an ISO 8601 date in UTC (run.json keeps both)."""
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec='seconds')


class RunRecord:
  """WORKDIR/run.json: one entry per invocation (environment, start and end times, steps
  trained, how it ended), so a resumed run keeps the history of every session and the
  time spent training excludes the gaps between them (`training_seconds`)."""

  def __init__(self, workdir, data_files=(), enabled=True):
    self.path = pathlib.Path(workdir) / RUN_FILE
    self.enabled = enabled
    if not enabled:
      return
    self.data = read_json(self.path) if self.path.exists() else {'sessions': []}
    now = time.time()
    self.session = dict(environment(data_files), start=now, start_iso=iso(now), end=None,
                        end_iso=None, status='running', start_step=None, end_step=None)
    self.data['sessions'].append(self.session)
    metrics_io.write_json(self.path, self.data)

  def note(self, key, value):
    """Adds `key` to this session's entry (e.g. the compiled step's options)."""
    if self.enabled:
      self.session[key] = value
      metrics_io.write_json(self.path, self.data)

  def finish(self, status, start_step, end_step):
    if not self.enabled:
      return
    now = time.time()
    self.session.update(end=now, end_iso=iso(now), status=status, start_step=start_step,
                        end_step=end_step)
    metrics_io.write_json(self.path, self.data)


def training_seconds(workdir):
  """Seconds spent in the sessions of a run (not the idle time between them). A session with
  no end recorded (killed: kill -9, a machine taken back; or still running) counts to its
  last event kept in metrics.jsonl, the one its successor resumed from, so a run trained
  across killed sessions reports the time of each, not only its last session's."""
  workdir = pathlib.Path(workdir)
  path = workdir / RUN_FILE
  if not path.exists():
    return None
  sessions = read_json(path)['sessions']
  times = None
  total = 0.0
  for i, s in enumerate(sessions):
    end = s['end']
    if end is None:
      if times is None:
        times = [e['wall_time'] for e in metrics_io.read_metrics(workdir / 'metrics.jsonl')
                 if isinstance(e.get('wall_time'), (int, float))]
      upto = sessions[i + 1]['start'] if i + 1 < len(sessions) else float('inf')
      end = max((t for t in times if s['start'] <= t < upto), default=s['start'])
    total += end - s['start']
  return total


def recorded_imports(workdir):
  """The modules every session of a run was started with (`--import`), in first-use order;
  [] for a run without run.json or recorded before the flag."""
  path = pathlib.Path(workdir) / RUN_FILE
  try:
    sessions = read_json(path)['sessions'] if path.exists() else []
  except (OSError, ValueError, KeyError, TypeError):
    return []
  out = []
  for s in sessions:  # each session holds `environment()`'s fields, 'imports' among them
    for name in s.get('imports') or []:
      if name not in out:
        out.append(name)
  return out
