"""Progress of long commands: a live line on a terminal, periodic log lines otherwise.

Every long command reports what it has done, its rate and an ETA: training
(per step), sweeps (per member and for the whole sweep), importance-weighted
evaluation (per batch of examples and samples) and the gradient study.
"""

import logging
import sys
import time

log = logging.getLogger('vae')


class Progress:
  """`update(done, **fields)` reports done/total, the rate in `unit`s/s and the ETA.

  Args:
    total: units of work in all.
    what: what is counted, e.g. 'step' or 'sweep member'.
    unit_scale: (multiplier, name) for a second rate, e.g. (batch size, 'ex').
    start: units already done when this run began (resumed work).
    min_interval_s: at most one log line per this many seconds (not on a terminal).
  """

  def __init__(self, total, what='step', unit_scale=None, start=0, min_interval_s=10.0):
    self.total, self.what, self.scale = total, what, unit_scale
    self.t0, self.s0, self.min_interval = time.time(), start, min_interval_s
    self.tty = sys.stderr.isatty()
    self._last_log = -float('inf')

  def restart(self, start):
    """Counts the rate afresh from `start` units (work that is done again)."""
    self.t0, self.s0 = time.time(), start

  def line(self, done, **fields):
    dt = max(time.time() - self.t0, 1e-9)
    rate = (done - self.s0) / dt
    eta = (self.total - done) / rate if rate > 0 else float('nan')
    text = f'{self.what} {done}/{self.total} | {rate:.3g}/s'
    if self.scale:
      text += f' {rate * self.scale[0]:.0f} {self.scale[1]}/s'
    text += f' | ETA {_duration(eta)}'
    for k, v in fields.items():
      text += f' | {k} {v:.2f}' if isinstance(v, float) else f' | {k} {v}'
    return text

  def update(self, done, **fields):
    text = self.line(done, **fields)
    if self.tty:
      sys.stderr.write('\r' + text + ' ' * 4)
      sys.stderr.flush()
    elif time.time() - self._last_log >= self.min_interval or done >= self.total:
      self._last_log = time.time()
      log.info(text)

  def close(self):
    if self.tty:
      sys.stderr.write('\n')


def _duration(seconds):
  if seconds != seconds:  # NaN: no rate yet
    return '?'
  seconds = int(seconds)
  if seconds < 120:
    return f'{seconds}s'
  if seconds < 7200:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
