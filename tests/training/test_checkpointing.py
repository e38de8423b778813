"""The background saver's back-pressure, and records written only after the commit."""

import threading
import time

from tests.helpers import smoke_config
from vae.training import estimates
from vae.training import checkpointing, loop, run_dir, saver as saver_lib


class _SlowCheckpointer:
  """Stands in for a Checkpointer whose saves take `seconds` each."""

  def __init__(self, seconds):
    self.seconds, self.committed, self.lock = seconds, [], threading.Lock()

  def save(self, step, state, meta, value):  # pylint: disable=unused-argument
    time.sleep(self.seconds)
    with self.lock:
      self.committed.append(step)


def test_saver_never_falls_more_than_its_bound_behind():
  ckpt = _SlowCheckpointer(0.05)
  saver = saver_lib.BackgroundSaver(max_in_flight=2)
  behind = []
  for step in range(10):
    saver.submit([(ckpt, step, {}, {}, None)])
    with ckpt.lock:
      behind.append(step + 1 - len(ckpt.committed))
  saver.wait()
  saver.close()
  assert ckpt.committed == list(range(10))
  assert max(behind) <= 2  # submitted minus committed, after each submit
  assert saver.wait_seconds > 0.2  # the loop waited for the queue (8 saves of 0.05 s)


def test_early_stopping_records_done_only_after_the_checkpoint_is_committed(
    tmp_path, monkeypatch):
  """A kill between done.json and the commit would leave a run recorded as ended whose
  last checkpoint does not exist; so done.json is written after the commit."""
  scripted = iter([-300.0, -200.0, -250.0, -260.0, -270.0, -280.0])
  real_summarize = estimates.summarize_sums

  def summarize(sums, num_dims, split, *args, **kwargs):
    out = real_summarize(sums, num_dims, split, *args, **kwargs)
    if split == 'val':
      out['val/elbo'] = next(scripted)
    return out

  real_save, real_done = checkpointing.Checkpointer.save, run_dir.write_done

  def slow_save(self, step, *args, **kwargs):
    time.sleep(0.3)  # a slow disk: the background save is still writing at the boundary
    return real_save(self, step, *args, **kwargs)

  seen = []

  def write_done(workdir, step, *args, **kwargs):
    seen.append((step, (workdir / 'checkpoints' / str(step)).is_dir()))
    return real_done(workdir, step, *args, **kwargs)

  monkeypatch.setattr(estimates, 'summarize_sums', summarize)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', slow_save)
  monkeypatch.setattr(run_dir, 'write_done', write_done)
  result = loop.train_and_evaluate(smoke_config(**{
      'train.num_epochs': 6.0, 'train.early_stopping_epochs': 2.0}), str(tmp_path / 'w'))
  assert result['status'] == 'early_stopped'
  assert seen == [(4 * 12, True)]  # stopped at epoch 4, its checkpoint already committed


def test_orbax_background_reports_are_one_warning_line_and_others_pass(capsys, caplog):
  """The "Event loop is closed" report orbax's event loop gives when a callback arrives after
  it closed (a step rotated away while read): one warning line for the first, nothing for
  the next; an unrelated unraisable report still reaches the previous hook."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from vae.training import orbax_reports  # pylint: disable=g-import-not-at-top

  class LateCallback:
    def __init__(self, loop):
      self.loop = loop

    def __del__(self):
      self.loop.call_soon_threadsafe(print)  # RuntimeError: Event loop is closed

  class Other:
    def __del__(self):
      raise ValueError('not orbax')

  loop = asyncio.new_event_loop()
  loop.close()
  passed = []
  saved = sys.unraisablehook
  sys.unraisablehook = lambda u: passed.append(type(u.exc_value).__name__)
  try:
    orbax_reports.quiet_orbax_reports()
    with caplog.at_level('WARNING', logger='vae'):
      for _ in range(3):
        LateCallback(loop)
        gc.collect()
      Other()
      gc.collect()
  finally:
    sys.unraisablehook = saved
  warnings = [r for r in caplog.records if 'orbax reported' in r.getMessage()]
  assert len(warnings) == 1 and 'Event loop is closed' in warnings[0].getMessage()
  assert passed == ['ValueError']
  assert 'Exception ignored' not in capsys.readouterr().err
