"""The workdir's record of a run: metrics.jsonl, TensorBoard events, config.json.

metrics.jsonl holds one JSON object per logged event, each with `event`
('train' or 'eval'), `step`, `epoch`, `examples_seen`, `wall_time` (Unix
seconds), `elapsed_s` (seconds since this process started training) and named
metrics ('train/loss', 'val/elbo', 'test/elbo', ...). Every line is flushed
and fsynced when written. On resume from the checkpoint at step S, lines with
step > S (written after that checkpoint by a run that then died) are dropped
first, so the file never holds a duplicate or a missing event. A line that is
not a well-formed event (damaged by hand or by a disk) is moved to
metrics.jsonl.malformed-<time> with a warning; the events around it are kept.
"""

import json
import logging
import math
import os
import pathlib
import time

from vae import config_lib

log = logging.getLogger('vae')


def _atomic_write(path, text):
  path = pathlib.Path(path)
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')  # concurrent writers never share it
  with open(tmp, 'wb' if isinstance(text, bytes) else 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _parse(path):
  """(events, malformed lines) of a metrics.jsonl. A last line without its newline was torn
  by a kill while being written: it is neither an event nor malformed."""
  events, bad = [], []
  path = pathlib.Path(path)
  if not path.exists():
    return events, bad
  lines = path.read_bytes().decode('utf-8', errors='replace').split('\n')
  torn = lines.pop()  # '' when the file ends with a newline
  for line in lines:
    if not line.strip():
      continue
    try:
      event = json.loads(line)
    except json.JSONDecodeError:
      bad.append(line)
      continue
    if isinstance(event, dict) and isinstance(event.get('step'), int):
      events.append(event)
    else:
      bad.append(line)
  del torn
  return events, bad


def read_metrics(path):
  """Every well-formed event of a metrics.jsonl, in order (malformed lines are skipped)."""
  return _parse(path)[0]


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
    events, bad = _parse(self.path)
    if bad:  # never dropped silently: kept beside the file for inspection
      side = self.path.with_name(f'{self.path.name}.malformed-{int(time.time())}')
      _atomic_write(side, ''.join(line + '\n' for line in bad))
      log.warning('%d malformed line(s) in %s moved to %s; every well-formed event is kept',
                  len(bad), self.path, side.name)
    kept = [e for e in events if resume_step is not None and e['step'] <= resume_step]
    _atomic_write(self.path, ''.join(json.dumps(e) + '\n' for e in kept))
    self._file = open(self.path, 'a')
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    purge = None if resume_step is None else resume_step + 1
    self._tb = SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard'), purge_step=purge)
    # Events are written in this thread, not through tensorboardX's queue thread: a failed
    # write (a full disk) then raises here, where the command reports it (exit 4), instead
    # of killing that thread and leaving every later write blocked on its full queue.
    events = self._tb._get_file_writer().event_writer  # pylint: disable=protected-access
    events.add_event = events._ev_writer.write_event  # pylint: disable=protected-access

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

  def text(self, tag, text, step=0):
    """A text panel in TensorBoard (the config of the run)."""
    if self.enabled:
      self._tb.add_text(tag, text, int(step))
      self._tb.flush()

  def image(self, tag, image_hwc, step):
    """An image [H, W, C] in [0, 1] in TensorBoard (reconstructions and samples)."""
    if self.enabled:
      self._tb.add_image(tag, image_hwc, int(step), dataformats='HWC')
      self._tb.flush()

  def hparams(self, hparams, metrics):
    """The run's hyperparameters and its final metrics for TensorBoard's HParams view, so a
    sweep's members compare side by side. Written into the run's own event file (one
    TensorBoard run per workdir); the metrics are the run's scalar tags, not copies."""
    if not self.enabled:
      return
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    clean = lambda v: v if isinstance(v, (bool, int, float, str)) else str(v)
    tags = {k: float(v) for k, v in metrics.items()
            if '/' in k and isinstance(v, (int, float)) and math.isfinite(v)}
    writer = self._tb._get_file_writer()  # pylint: disable=protected-access  (as add_hparams)
    for proto in summary.hparams({k: clean(v) for k, v in hparams.items()}, tags):
      writer.add_summary(proto)
    self._tb.flush()

  def close(self):
    """Closes the files; a second call does nothing."""
    if self.enabled:
      self._file.close()
      self._tb.close()
      self.enabled = False


def write_bytes(path, data):
  """Writes `data` to `path` atomically (a temporary name, fsync, rename)."""
  _atomic_write(path, bytes(data))


def write_json(path, obj):
  _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def last_metrics(workdir):
  """The newest value of every metric in WORKDIR/metrics.jsonl (train and eval merged)."""
  out = {}
  for e in read_metrics(pathlib.Path(workdir) / 'metrics.jsonl'):
    out.update({k: v for k, v in e.items() if '/' in k})
  return out


PROBE_BYTES = 1 << 16  # an empty probe file fits on a full disk; this much does not


def check_writable(path):
  """Raises ConfigError unless a file can be written at `path`: a probe of PROBE_BYTES is
  written and synced to the disk (so that a full disk is found before the work, not after
  it), then removed."""
  path = pathlib.Path(path)
  probe = path.with_name(f'.{path.name}.write-probe')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
      with open(probe, 'wb') as f:
        f.write(b'\0' * PROBE_BYTES)
        f.flush()
        os.fsync(f.fileno())
    finally:
      if probe.exists():
        probe.unlink()
  except OSError as e:
    raise config_lib.ConfigError(f'cannot write {path} ({e.strerror}); give a writable '
                                 'path (with free space)') from None
