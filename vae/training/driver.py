"""The driver of the training loop: chunks dispatched ahead, and the work at each boundary.

`Driver.run` keeps the device busy: the next chunk is dispatched before the last one's
results are read, and the host's boundary work (train metrics, the evaluation with early
stopping and images, checkpoints written in the background) overlaps it. `Feed` gives each
chunk its data (the resident set, or the chunk's batches streamed from the host).
"""

import concurrent.futures
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae import errors
from vae.data import input_pipeline
from vae.families import models
from vae.training import device_timeline, estimates, members as members_lib, plots
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

  def __init__(self, runs, group, sched, evaluator, saver, preempt, t_start, step):
    self.runs, self.group, self.sched = runs, group, sched
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
      due = self._checkpoint_due(end) or preempted
      boundary = self._capture(state, end, due)     # device work on the state at `end`
      ahead = None
      if end < self.sched.total_steps and not preempted:
        ahead = self._dispatch(state, end, feed)    # the device goes on meanwhile
      self._check_finite(bad, means)
      if self.steady_from is None:
        log.info('first chunk finished %.1f s after start', time.time() - self.t_start)
        self.steady_from = time.perf_counter()
      self._at_boundary(end, jax.device_get(means), boundary, due, preempted)
      if preempted or ahead is None or all(r.stopped for r in self.runs):
        return end
      end, state, means, bad = ahead

  def _training(self):
    return [m for m, r in enumerate(self.runs) if not r.stopped]

  def _capture(self, state, step, due):
    """Dispatches what the boundary at `step` needs of the state: the evaluation, and
    snapshots of each training member (for checkpoints and images) where one is due or an
    evaluation may stop a member."""
    t0 = time.perf_counter()
    sched, group = self.sched, self.group
    sums = None
    if sched.is_eval(step):
      sums = {s: self.evaluator.fn(state, b, mk, self.train_data)
              for s, (b, mk) in self.evaluator.sets.items()}
      for v in sums.values():
        self.timeline.dispatched('eval', v)
    self.seconds['eval'] += time.perf_counter() - t0
    t0 = time.perf_counter()
    snapshots = {}
    if sched.is_eval(step) or due:
      for m in self._training():
        snapshots[m] = device_copy(group.member_state(state, m))
        self.timeline.dispatched('snapshot', jax.tree.leaves(snapshots[m])[0])
    self.seconds['checkpoint'] += time.perf_counter() - t0
    return sums, snapshots

  def _checkpoint_due(self, step):
    return self.sched.is_checkpoint(step) or (
        self.checkpoint_every_s > 0
        and time.perf_counter() - self.last_save_t >= self.checkpoint_every_s)

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

  def _at_boundary(self, step, means, boundary, due, preempted):
    """Hands a finished chunk's results to the runs: train metrics, the evaluation (with
    early stopping and images), checkpoints (written in the background)."""
    runs, group, sched = self.runs, self.group, self.sched
    sums, snapshots = boundary
    base, several = runs[0].config, len(runs) > 1
    epoch = step / sched.steps_per_epoch
    examples = step * base.train.batch_size
    training = self._training()
    for m in training:
      runs[m].log_train(step, epoch, examples, group.pick(means, m))
    if several:  # the range over the members still training, said as such
      losses = [runs[m].last.get('train/loss', float('nan')) for m in training]
      self.progress.update(step, loss=f'{min(losses):.2f}..{max(losses):.2f} over '
                           f'{len(training)} training members')
    else:
      first = runs[training[0]].last
      self.progress.update(step, loss=first.get('train/loss', float('nan')),
                           elbo=first.get('train/elbo', float('nan')))
    stopping = set()
    if sums is not None:
      t0 = time.perf_counter()
      per_split = {s: jax.device_get(v) for s, v in sums.items()}
      for m in training:
        r = runs[m]
        em = {}
        for split, split_sums in per_split.items():
          sums_m = members_lib.unpad_sums(group.pick(split_sums, m),
                                          models.total_latent_dim(r.config.model))
          em.update(estimates.summarize_sums(sums_m, self.evaluator.num_dims, split,
                                              base.train.active_unit_threshold))
        if r.log_eval(step, epoch, examples, em, self.patience_steps):
          stopping.add(m)
        warn_collapse(em, r.config, r.workdir if several else None)
      self.seconds['eval'] += time.perf_counter() - t0
      t0 = time.perf_counter()
      for m in training:
        if sched.is_images(step) or m in stopping:
          write_images(runs[m].writer, step, group.image_variables(snapshots[m]),
                        group.image_fns(m),
                        self.evaluator.recon_inputs[m], self.evaluator.sample_keys[m],
                        runs[m].chief, self._submit_file)
      self.seconds['images'] += time.perf_counter() - t0
    t0 = time.perf_counter()
    saving = [m for m in training if due or m in stopping]
    self.saver.submit([runs[m].save_job(step, snapshots[m]) for m in saving])
    if saving:
      self.last_save_t = time.perf_counter()
    if stopping or preempted:
      # done.json and the "saved" line only once the checkpoints they speak of are committed.
      self.saver.wait()
    self.seconds['checkpoint'] += time.perf_counter() - t0
    for m in sorted(stopping):
      runs[m].stop_early(step, f'{runs[m].workdir} ' if several else '')
      group.set_active(m, False)
    if preempted:
      for m in training:
        runs[m].interrupted(preempted)
      committed = runs[training[0]].checkpointer.latest_step() if training else None
      log.warning('%s received: checkpoint committed at step %s; rerun the same command to '
                  'resume', preempted, committed)

  def _submit_file(self, fn, *args, **kwargs):
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


# A copy on the device, dispatched without waiting (the state's own buffers go to the next
# chunk); `jax.Array.copy` would wait for the array on some backends.
device_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def warn_collapse(metrics, config, where=None):
  active = metrics.get('val/active_units', metrics.get('test/active_units'))
  total = models.total_latent_dim(config.model)
  if active is None or not models.has_posterior(config.model):
    return
  if active < config.train.collapse_warn_fraction * total:
    log.warning('posterior collapse%s: only %d of %d latent units are active (variance of '
                'the posterior mean > %g); consider KL warm-up or free bits',
                f' in {where}' if where else '', active, total,
                config.train.active_unit_threshold)


def write_images(writer, step, variables, fns, inputs, sample_key, write, submit=None):
  """Reconstructions (means, not logits) of fixed test images and fixed prior samples, as
  PNG files in images/ and in TensorBoard.

  Every process runs the (collective) decoding; only the chief (`write`) saves files, the
  PNG figures through `submit(fn, *args, **kwargs)` when given (matplotlib takes a few tenths of a second
  a figure: they are drawn while training goes on).
  """
  recon_fn, sample_fn = fns
  recon = recon_fn(variables, inputs)
  samples = sample_fn(variables, sample_key)
  if not write:
    return
  images = writer.path.parent / 'images'
  grids = {'reconstructions': plots.interleave(jax.device_get(inputs), jax.device_get(recon)),
           'samples': jax.device_get(samples)}
  titles = {'reconstructions': f'step {step}: test images (odd rows) and reconstructions',
            'samples': f'step {step}: decoded means of fixed prior samples'}
  for name, grid in grids.items():
    args = (grid, images / f'{name}_{step:08d}.png')
    if submit is None:
      plots.save_grid(*args, title=titles[name])
    else:
      submit(plots.save_grid, *args, title=titles[name])
    writer.image(f'images/{name}', np.clip(plots.tile(grid), 0.0, 1.0), step)
