"""Checkpoints written in the background: `BackgroundSaver`, with back-pressure."""

import concurrent.futures
import time

import jax


# Checkpoint jobs queued or being written at once before the loop waits (BackgroundSaver).
MAX_SAVES_IN_FLIGHT = 2


class BackgroundSaver:
  """Writes checkpoints on one background thread, in the order they are handed over, so
  that training goes on while files are written and checksummed.

  The loop hands over snapshots: device copies of the states, taken before the next chunk
  reuses the state's buffers. The thread copies them to the host, computes the checksums and
  saves through orbax (atomic: temporary directory, then rename). A group's members of one
  step are one job, saved one after another (a kill between two of them leaves a step some
  members lack; `restore_group` resumes below it). An error (a full disk) surfaces in the
  loop at the next `submit` or at `wait`. A multi-process run saves in the loop's thread
  (`background=False`): its arrays span processes and orbax coordinates the write.

  Back-pressure: at most `max_in_flight` jobs are queued or being written; a `submit` past
  that waits for the oldest to commit (`wait_seconds` counts that wait, which run.json
  records), so the saves never fall behind training by more than that many checkpoints and
  a signal's final wait is bounded by as many saves.
  """

  def __init__(self, hooks=None, background=True, max_in_flight=MAX_SAVES_IN_FLIGHT):
    self.hooks, self.background = hooks, background
    self.max_in_flight = max(1, int(max_in_flight))
    self._pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='vae-save')
                  if background else None)
    self._pending = []
    self.seconds = 0.0  # spent saving (on the thread: not in the loop's way)
    self.wait_seconds = 0.0  # the loop's waits for a full queue (back-pressure)

  def submit(self, saves):
    """Queues one job: `saves` is a list of (checkpointer, step, state snapshot, meta,
    selection ELBO or None)."""
    self.check()
    if not saves:
      return
    if self._pool is None:
      self._save(saves)
      return
    if len(self._pending) >= self.max_in_flight:
      t0 = time.perf_counter()
      while len(self._pending) >= self.max_in_flight:
        self._pending.pop(0).result()  # the oldest job commits (or raises its error)
      self.wait_seconds += time.perf_counter() - t0
    self._pending.append(self._pool.submit(self._save, saves))

  @property
  def in_flight(self):
    """The number of jobs queued or being written."""
    return sum(not f.done() for f in self._pending)

  def _save(self, saves):
    t0 = time.perf_counter()
    for i, (ckpt, step, state, meta, value) in enumerate(saves):
      if i and self.hooks is not None:
        self.hooks.between_member_saves(step)
      ckpt.save(step, jax.device_get(state) if self.background else state, meta, value)
    self.seconds += time.perf_counter() - t0

  def check(self):
    """Raises the error of a finished job, if one failed."""
    done, pending = [], []
    for f in self._pending:  # one look at each job: one that ends meanwhile is not lost
      (done if f.done() else pending).append(f)
    self._pending = pending
    for f in done:
      f.result()

  def wait(self):
    """Waits for every queued job; raises the first error."""
    pending, self._pending = self._pending, []
    for f in pending:
      f.result()

  def close(self):
    """Waits for the queued jobs (errors are not raised here: `wait` raises them)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True)
