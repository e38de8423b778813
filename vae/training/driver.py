"""The driver of the training loop: chunks dispatched ahead, the boundary work overlapping.

`Driver.run` keeps the device busy: the next chunk is dispatched before the last one's
results are read, and the host's boundary work (the periodic actions of actions.py: train
metrics, the evaluation with early stopping, images, checkpoints written in the
background, the answer to a signal) overlaps it. `Feed` gives each
chunk its data (the resident set, or the chunk's batches streamed from the host).
"""

import concurrent.futures
import logging
import time

import jax
import numpy as np

from vae import errors
from vae.data import input_pipeline
from vae.training import actions as actions_lib, device_timeline
from vae.training import progress as progress_lib
from vae.training import sharding

log = logging.getLogger('vae')
MembersDiverged = errors.MembersDiverged
NonFiniteError = errors.NonFiniteError


class Feed:
  """The training data of each chunk: the resident set, or the chunk's batches from the host."""

  def __init__(self, group, mesh, sched, streamed, train_images, runs):
    self.group, self.mesh, self.streamed = group, mesh, streamed
    # The resident training set is split over the data axis (padded to divide).
    self.resident = None if streamed else sharding.put_examples(train_images, mesh)
    self.feeders = [input_pipeline.HostFeeder(train_images, runs[0].config.train.batch_size,
                                              r.config.seed, sched)
                    for r in runs] if streamed else None

  def data(self, step, end):
    if not self.streamed:
      return self.resident
    chunks = [f.batches(step, end) for f in self.feeders]
    host = np.stack(chunks, axis=1) if self.group.batched else chunks[0]
    return sharding.put(host, sharding.streamed_sharding(self.mesh, self.group.batched))


class Driver:
  """Runs the chunks so that the device never waits for the host: the next chunk is
  dispatched before the last one's results are read, and what the host does with them
  (metrics, evaluation results, early stopping, images, checkpoints written in the
  background) overlaps the next chunk. Anything that needs the state at a boundary (an
  evaluation, a snapshot for a checkpoint or images) is dispatched before the next chunk
  takes over the state's buffers.

  What changes against a loop that waits: nothing in the numbers. A chunk dispatched ahead
  is discarded when the run ends at the boundary before it (early stopping of every member,
  a signal, NaN); a member of a group that stops early trains one chunk more inside the
  program, which is never saved or reported. NaN is read before any snapshot of that
  boundary is saved, so no checkpoint holds a non-finite state.
  """

  def __init__(self, runs, group, sched, evaluator, saver, preempt, t_start, step,
               actions=None):
    self.runs, self.group, self.sched = runs, group, sched
    self.actions = actions_lib.default_actions() if actions is None else actions
    self.evaluator, self.saver, self.preempt, self.t_start = evaluator, saver, preempt, t_start
    base = runs[0].config
    self.patience_steps = int(round(base.train.early_stopping_epochs * sched.steps_per_epoch))
    # Wall-clock cadence: one process decides alone only when it is the only one.
    self.checkpoint_every_s = (60.0 * base.train.checkpoint_every_minutes
                               if jax.process_count() == 1 else 0.0)
    self.last_save_t = time.perf_counter()
    self.timeline = device_timeline.DeviceTimeline()
    self.files = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='vae-files')
    self.file_jobs = []
    self.steady_from = None
    self.order = None  # the data order the last chunk left (chunks.make_train_chunk)
    self.seconds = {'eval': 0.0, 'checkpoint': 0.0, 'images': 0.0}
    size = len(runs)
    self.progress = progress_lib.Progress(
        sched.total_steps, 'step' if size == 1 else f'group of {size}: step',
        (base.train.batch_size * size, 'ex'), step, min_interval_s=0.0)

  def rewind(self, step):
    """Goes back to `step` (the group restored an earlier checkpoint): the data order is
    computed again from it and the progress line restarts there."""
    self.order = None
    self.progress.restart(step)

  def _dispatch(self, state, step, feed):
    end = self.sched.next_boundary(step)
    group, data = self.group, feed.data(step, end)
    if self.order is None:
      self.order = group.no_order(data)
    state, means, bad, self.order = group.chunk_fn(state, data, group.data_keys, group.hp,
                                                   end - step, self.order)
    self.timeline.dispatched('chunk', bad)
    return end, state, means, bad

  def run(self, state, step, feed):
    """Trains from `step` to the end (or a stop); returns the step reached."""
    self.train_data = feed.resident  # for a prior that needs it (None when streamed)
    if self.preempt.agreed():
      log.warning('%s received before the first step; nothing changed: rerun the same command '
                  'to start', self.preempt.requested)
      for r in self.runs:
        r.interrupted(self.preempt.requested)
      return step
    if step >= self.sched.total_steps or all(r.stopped for r in self.runs):
      return step
    end, state, means, bad = self._dispatch(state, step, feed)
    while True:
      preempted = self.preempt.agreed()
      due = self._checkpoint_due(end) or bool(preempted)
      boundary = self._capture(state, end, due, preempted)  # device work on the state
      ahead = None
      if end < self.sched.total_steps and not preempted:
        ahead = self._dispatch(state, end, feed)    # the device goes on meanwhile
      self._check_finite(bad, means)
      if self.steady_from is None:
        log.info('first chunk finished %.1f s after start', time.time() - self.t_start)
        self.steady_from = time.perf_counter()
      self._finish(boundary, jax.device_get(means))
      if preempted or ahead is None or all(r.stopped for r in self.runs):
        return end
      end, state, means, bad = ahead

  def _training(self):
    return [m for m, r in enumerate(self.runs) if not r.stopped]

  def _capture(self, state, step, due, preempted):
    """Every action's device work on the state at `step` (actions.py); the boundary."""
    b = actions_lib.Boundary(step, step / self.sched.steps_per_epoch,
                         step * self.runs[0].config.train.batch_size, due, preempted,
                         self._training())
    for a in self.actions:
      t0 = time.perf_counter()
      b.captured[a.name] = a.capture(self, state, b)
      self._count(a, t0)
    return b

  def _count(self, action, t0):
    if action.bucket:
      self.seconds[action.bucket] += time.perf_counter() - t0

  def _checkpoint_due(self, step):
    return self.sched.is_checkpoint(step) or (
        self.checkpoint_every_s > 0
        and time.perf_counter() - self.last_save_t >= self.checkpoint_every_s)

  def saved(self):
    """A checkpoint action submitted saves: the wall-clock cadence restarts."""
    self.last_save_t = time.perf_counter()

  def _check_finite(self, bad, means):
    bad = int(bad)
    if bad >= 0:
      self.saver.wait()  # the good states queued before it are committed first
      training = self._training()
      if self.group.batched and len(training) > 1:
        loss = np.asarray(jax.device_get(means['loss']))
        culprits = [m for m in training if not np.isfinite(loss[m])]
        if culprits and len(culprits) < len(training):
          raise MembersDiverged(culprits, bad)
      latest = self.runs[0].checkpointer.latest_step()
      raise NonFiniteError(
          f'loss or gradient became NaN/Inf at step {bad}; no checkpoint written after it '
          f'(last good checkpoint: step {latest}); lower optim.lr or set optim.grad_clip')

  def _finish(self, b, means):
    """Every action's host part, once the chunk's results are read."""
    b.means = means
    for a in self.actions:
      t0 = time.perf_counter()
      a.finish(self, b)
      self._count(a, t0)

  def submit_file(self, fn, *args, **kwargs):
    """Runs `fn` (a figure's drawing) on the file thread; an earlier job's error is raised."""
    self.file_jobs = [f for f in self.file_jobs if not f.done() or f.result()]
    self.file_jobs.append(self.files.submit(fn, *args, **kwargs))

  def close(self):
    """Ends the progress line and waits for the figures still being drawn (raising the
    error of one that failed)."""
    self.progress.close()
    self.timeline.close()  # its watcher thread ends with the run, also one that failed
    self.files.shutdown(wait=True)
    for f in self.file_jobs:
      f.result()

  def timing(self):
    """Seconds of the host's boundary work and the device's busy share, for run.json."""
    whole = self.timeline.summary()
    steady = self.timeline.summary(self.steady_from) if self.steady_from else whole
    return {'whole': whole, 'steady': steady,
            'eval_s': round(self.seconds['eval'], 3),
            'checkpoint_s': round(self.seconds['checkpoint'], 3),
            'checkpoint_background_s': round(self.saver.seconds, 3),
            'checkpoint_wait_s': round(self.saver.wait_seconds, 3),
            'images_s': round(self.seconds['images'], 3)}
