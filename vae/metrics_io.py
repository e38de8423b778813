"""The workdir's record of a run: metrics.jsonl, TensorBoard events, config.json.

metrics.jsonl holds one JSON object per logged event, each with `event`
('train' or 'eval'), `step`, `epoch`, `examples_seen`, `wall_time` (Unix
seconds), `elapsed_s` (seconds since this process started training) and named
metrics ('train/loss', 'val/elbo', 'test/elbo', ...). Every line is flushed
and fsynced when written. On resume from the checkpoint at step S, lines with
step > S (written after that checkpoint by a run that then died) are dropped
first, so the file never holds a duplicate or a missing event.
"""

import json
import math
import os
import pathlib
import time


def _atomic_write(path, text):
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_metrics(path):
  """All complete events of a metrics.jsonl (a torn last line is ignored)."""
  events = []
  path = pathlib.Path(path)
  if not path.exists():
    return events
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        events.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a line torn by a kill: it and anything after it is not trusted
  return events


def _jsonable(v):
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


class MetricsWriter:
  """Appends events to metrics.jsonl and TensorBoard; only the chief process writes."""

  def __init__(self, workdir, resume_step=None, enabled=True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self.start = time.time()
    self._tb = None
    if not enabled:
      return
    kept = [e for e in read_metrics(self.path)
            if resume_step is not None and e.get('step', 0) <= resume_step]
    _atomic_write(self.path, ''.join(json.dumps(e) + '\n' for e in kept))
    self._file = open(self.path, 'a')
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    purge = None if resume_step is None else resume_step + 1
    self._tb = SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard'), purge_step=purge)

  def write(self, event, step, epoch, examples_seen, metrics):
    if not self.enabled:
      return
    record = {'event': event, 'step': int(step), 'epoch': float(epoch),
              'examples_seen': int(examples_seen), 'wall_time': time.time(),
              'elapsed_s': time.time() - self.start}
    record.update({k: _jsonable(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())
    for k, v in metrics.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self):
    """Closes the files; a second call does nothing."""
    if self.enabled:
      self._file.close()
      self._tb.close()
      self.enabled = False


def write_json(path, obj):
  _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def last_metrics(workdir):
  """The newest value of every metric in WORKDIR/metrics.jsonl (train and eval merged)."""
  out = {}
  for e in read_metrics(pathlib.Path(workdir) / 'metrics.jsonl'):
    out.update({k: v for k, v in e.items() if '/' in k})
  return out
