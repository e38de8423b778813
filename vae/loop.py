"""The one training loop, for a single run and for a vmapped group of members.

`train_and_evaluate(config, workdir)` trains one model; `train_members(configs,
workdirs, group_dir)` trains M models together in one compiled program
(`members.Group`). Both are `train`: the same host loop, where a single run is
the one-member case with the unbatched step. Every per-run feature works per
member: its metrics, images and collapse warnings at each evaluation, its own
latest and best checkpoints (unpadded, loadable with `vae.load`), early
stopping (a stopped member is frozen inside the program; the loop ends when
all have stopped or at the end), its data order from its own seed (resident
or streamed), a lock on its workdir and its done record.

Time: durations in the config are in epochs; they are converted to steps once
(`Schedule`). The host calls one compiled chunk up to the next boundary: a
log, eval or checkpoint step or the end. Train metrics are averaged over the
chunk, and resume always starts at a boundary, so a resumed run logs the same
numbers as an uninterrupted one.
"""

import contextlib
import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae import checkpointing, config_lib, data as data_lib, evaluation, input_pipeline
from vae import members as members_lib, metrics_io, models, optim, plots
from vae import progress as progress_lib
from vae import run as run_lib
from vae import run_dir, settings, sharding, validation
from vae.step import NonFiniteError

log = logging.getLogger('vae')


@dataclasses.dataclass(frozen=True)
class Schedule:
  """All durations in steps, converted once from the config's epochs."""
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  images_every: int = 0  # 0: at every evaluation

  @classmethod
  def from_config(cls, config, num_train):
    t = config.train
    spe = num_train // t.batch_size
    to_steps = lambda epochs: max(1, int(round(epochs * spe)))
    total = to_steps(t.num_epochs)
    if config.optim.schedule == 'iwae_staircase':
      total = to_steps(optim.total_iwae_epochs(config.optim.iwae_stages))
    images = to_steps(t.images_every_epochs) if t.images_every_epochs else 0
    return cls(spe, total, t.log_every_steps, to_steps(t.eval_every_epochs),
               to_steps(t.checkpoint_every_epochs), images)

  def next_boundary(self, step):
    nxt = lambda every: (step // every + 1) * every
    return min(nxt(self.log_every), nxt(self.eval_every), nxt(self.checkpoint_every),
               self.total_steps)

  @property
  def max_chunk(self):
    return min(self.log_every, self.eval_every, self.checkpoint_every, self.total_steps)

  def is_eval(self, step):
    return step % self.eval_every == 0 or step == self.total_steps

  def is_checkpoint(self, step):
    return step % self.checkpoint_every == 0 or step == self.total_steps

  def is_images(self, step):
    """Whether the evaluation at `step` writes images: the first evaluation at or after each
    multiple of images_every (every evaluation when images_every is 0), and the last step."""
    if not self.images_every or step == self.total_steps:
      return True
    return step // self.images_every != (step - self.eval_every) // self.images_every


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains and evaluates the model that `config` describes, writing into `workdir`.

  Running it again on the same workdir resumes from the newest good checkpoint.

  Args:
    config: a config from configs/ (see vae/config_lib.py for every field).
    workdir: output directory (created if needed).

  Returns:
    dict with the last logged metrics, 'step' and 'status' ('finished',
    'early_stopped' or the name of the signal that preempted the run).

  Raises:
    ConfigError, DataError, CheckpointError: bad input, before any compilation.
    NonFiniteError: the loss or gradient became NaN/Inf (no checkpoint written).
  """
  return train([config], [workdir])[0]


def train_members(configs, workdirs, group_dir):
  """Trains members that differ only in `config_lib.VMAPPABLE` fields in one program.

  Args:
    configs: member configs.
    workdirs: one output directory per member (each gets a single run's files).
    group_dir: the group's directory (members.json, mesh.json and its lock).

  Returns:
    one result dict per member, like `train_and_evaluate`'s.
  """
  return train(configs, workdirs, group_dir)


def train(configs, workdirs, group_dir=None):
  """The loop: one member unbatched (`group_dir` None) or a vmapped group. See the module."""
  t_start = time.time()
  for c in configs:
    validation.validate(c)
  if group_dir is not None:
    config_lib.check_vmappable(configs)
  chief = jax.process_index() == 0
  dirs = [run_dir.prepare_workdir(w) for w in workdirs]
  group_dir = None if group_dir is None else run_dir.prepare_workdir(group_dir)
  with contextlib.ExitStack() as stack:
    if chief:
      for d in dirs + ([group_dir] if group_dir is not None else []):
        stack.callback(run_dir.WorkdirLock(d).release)
    # Signals count from here: one that arrives before the first step ends the run cleanly.
    preempt = run_dir.Preemption()
    preempt.install()
    stack.callback(preempt.restore)
    return _train(configs, dirs, group_dir, chief, t_start, preempt)


def _train(configs, workdirs, group_dir, chief, t_start, preempt):
  configs = [_keep_legacy_fields(c, w) for c, w in zip(configs, workdirs)]
  runs = [run_lib.Run(c, w, chief) for c, w in zip(configs, workdirs)]
  if group_dir is not None:
    run_dir.check_group_config(group_dir, [r.config_json for r in runs])
  if all(r.stopped for r in runs):
    log.info('nothing to train: every run in %s has ended', [str(w) for w in workdirs])
    return [dict(r.last, status=r.done['status']) for r in runs]
  base = configs[0]
  dataset = data_lib.load(base.data)
  validation.validate_for_data(base, dataset.image_shape, len(dataset.train))
  mesh = sharding.make_model_mesh(len(runs) if group_dir is not None else 1)
  sched = _check_sizes(base, runs, mesh, len(dataset.train))
  try:
    hooks = settings.fault_hooks()
    _start_runs(runs, dataset.info, group_dir, mesh, chief, hooks)
    return _train_runs(runs, group_dir, dataset, mesh, sched, t_start, preempt, hooks)
  finally:
    for r in runs:
      r.close()


def _check_sizes(base, runs, mesh, num_train):
  """The Schedule, after checking that batches divide over the data axis and that no saved
  checkpoint lies past the configured end."""
  n_data = sharding.data_axis_size(mesh)
  for name in ('batch_size', 'eval_batch_size'):
    config_lib.check(base.train[name] % n_data == 0,
                     f'train.{name}={base.train[name]} does not divide over the {n_data} '
                     f'devices of the data axis; use a multiple of {n_data}')
  log.info('devices: %s; mesh %s; process %d of %d', _device_summary(), dict(mesh.shape),
           jax.process_index(), jax.process_count())
  sched = Schedule.from_config(base, num_train)
  for r in runs:
    saved = r.saved_steps()
    config_lib.check(not saved or saved[-1] <= sched.total_steps,
                     f'train.num_epochs={base.train.num_epochs} ends at step {sched.total_steps}, '
                     f'but {r.workdir} holds a checkpoint at step {saved[-1] if saved else 0}; give '
                     'at least the epochs already trained, or use a new --workdir')
  return sched


def _start_runs(runs, dataset_info, group_dir, mesh, chief, hooks):
  # Each member's checkpoints live in its own workdir; a group keeps >= 2 so that a kill
  # between two members' saves leaves a step that all of them have.
  keep = runs[0].config.train.keep_checkpoints
  keep = keep if len(runs) == 1 else max(2, keep)
  for r in runs:
    r.start(dataset_info, keep, hooks)
  if chief and group_dir is not None:
    metrics_io.write_json(group_dir / run_dir.GROUP_FILE, [r.config_json for r in runs])
    metrics_io.write_json(group_dir / 'mesh.json', dict(mesh.shape))


def _restore(runs, group, sched):
  """The group's train state: restored at the newest step every training run committed
  (checkpointing's resume order), else fresh. Returns (state, resume step or None)."""
  size = len(runs)
  restored = checkpointing.restore_group(
      [r.checkpointer for r in runs], [group.member_abstract(m) for m in range(size)],
      [r.meta for r in runs], frozen=[m for m, r in enumerate(runs) if r.stopped])
  if restored is None:
    state, resume_step = group.init(), None
    log.info('starting from scratch: %d steps (%d per epoch)%s', sched.total_steps,
             sched.steps_per_epoch,
             f', {size} members (train.member_loop {group.member_loop})' if size > 1 else '')
  else:
    member_states, resume_step = restored
    state = group.join(member_states)
    log.info('resumed from checkpoint step %d of %d', resume_step, sched.total_steps)
  for m, r in enumerate(runs):
    if r.stopped:
      group.set_active(m, False)
  for r in runs:
    r.resume(resume_step)
  return state, resume_step


@dataclasses.dataclass
class _Evaluator:
  """The evaluation sets on the device and the fixed inputs of the images."""
  fn: object
  sets: dict
  sample_keys: list
  recon_inputs: list
  num_dims: int


def _make_evaluator(group, base, mesh, eval_mode, val_images, test_images, image_shape):
  eval_sharding = sharding.batch_sharded(mesh, 1)
  sets = {}
  for split, images in (('val', val_images), ('test', test_images)):
    if len(images):
      batches, mask = input_pipeline.pad_to_batches(images, base.train.eval_batch_size)
      sets[split] = (sharding.put(batches, eval_sharding), sharding.put(mask, eval_sharding))
  return _Evaluator(
      fn=group.make_eval_fn(eval_mode, base.train.eval_iw_samples), sets=sets,
      sample_keys=[k['sample'] for k in group.keys],  # the same draws at every evaluation
      recon_inputs=[input_pipeline.to_float(jnp.asarray(test_images[:32]), eval_mode, k['eval'])
                    for k in group.keys],
      num_dims=int(np.prod(image_shape)))


def _train_runs(runs, group_dir, dataset, mesh, sched, t_start, preempt, hooks):
  """Builds the group, restores, and dispatches chunks up to the end; returns the results."""
  base, size = runs[0].config, len(runs)
  num_train = len(dataset.train)
  _, eval_mode = input_pipeline.conversion_modes(base.data)
  train_images, val_images, test_images = input_pipeline.prepare_host_splits(dataset, base.data)
  streamed = (base.data.residency == 'host' or (
      base.data.residency == 'auto' and train_images.nbytes > base.data.max_device_bytes))
  group = members_lib.Group([r.config for r in runs], dataset.image_shape, sched, mesh,
                            streamed, num_train, batched=group_dir is not None, hooks=hooks)
  log.info('compiled step: %s', group.options)
  for r in runs:
    r.record.note('step_options', group.options.record())
  state, resume_step = _restore(runs, group, sched)
  patience_steps = int(round(base.train.early_stopping_epochs * sched.steps_per_epoch))
  evaluator = _make_evaluator(group, base, mesh, eval_mode, val_images, test_images,
                              dataset.image_shape)
  # The resident training set is split over the data axis (padded to divide).
  train_data = None if streamed else sharding.put_examples(train_images, mesh)
  feeders = [input_pipeline.HostFeeder(train_images, base.train.batch_size, r.config.seed,
                                       sched) for r in runs] if streamed else None
  step = resume_step or 0
  progress = progress_lib.Progress(
      sched.total_steps, 'step' if size == 1 else f'group of {size}: step',
      (base.train.batch_size * size, 'ex'), step, min_interval_s=0.0)
  signalled_early = preempt.agreed()
  if signalled_early:
    log.warning('%s received before the first step; nothing changed: rerun the same command '
                'to start', preempt.requested)
    for r in runs:
      r.interrupted(preempt.requested)
  first_chunk = True
  try:
    while step < sched.total_steps and not all(r.stopped for r in runs) and not signalled_early:
      end = sched.next_boundary(step)
      if streamed:
        chunks = [f.batches(step, end) for f in feeders]
        host = np.stack(chunks, axis=1) if group.batched else chunks[0]
        data = sharding.put(host, sharding.streamed_sharding(mesh, group.batched))
      else:
        data = train_data
      state, means, bad = group.chunk_fn(state, data, group.data_keys, group.hp, end - step)
      bad = int(bad)
      if bad >= 0:
        raise NonFiniteError(
            f'loss or gradient became NaN/Inf at step {bad}; no checkpoint written after it '
            f'(last good checkpoint: step {runs[0].checkpointer.latest_step()}); lower '
            'optim.lr or set optim.grad_clip')
      step = end
      if first_chunk:
        log.info('first chunk finished %.1f s after start', time.time() - t_start)
        first_chunk = False
      if _at_boundary(runs, group, state, jax.device_get(means), step, sched, evaluator,
                      patience_steps, progress, preempt, hooks):
        break
  finally:
    progress.close()
  return [r.finish(step, resume_step) for r in runs]


def _at_boundary(runs, group, state, means, step, sched, evaluator, patience_steps, progress,
                 preempt, hooks):
  """Hands a finished chunk's results to the runs: train metrics, an evaluation (with early
  stopping and images) where one is due, checkpoints. Returns whether a signal ends the loop."""
  base, several = runs[0].config, len(runs) > 1
  epoch = step / sched.steps_per_epoch
  examples = step * base.train.batch_size
  training = [m for m, r in enumerate(runs) if not r.stopped]
  for m in training:
    runs[m].log_train(step, epoch, examples, group.pick(means, m))
  first = runs[training[0]].last
  progress.update(step, loss=first.get('train/loss', float('nan')),
                  elbo=first.get('train/elbo', float('nan')))
  stopping = set()
  if sched.is_eval(step):
    per_split = {s: jax.device_get(evaluator.fn(state, b, mk))
                 for s, (b, mk) in evaluator.sets.items()}
    for m in training:
      r = runs[m]
      em = {}
      for split, sums in per_split.items():
        sums_m = members_lib.unpad_sums(group.pick(sums, m),
                                        models.total_latent_dim(r.config.model))
        em.update(evaluation.summarize_sums(sums_m, evaluator.num_dims, split,
                                            base.train.active_unit_threshold))
      if r.log_eval(step, epoch, examples, em, patience_steps):
        stopping.add(m)
      _warn_collapse(em, r.config, r.workdir if several else None)
      if sched.is_images(step) or m in stopping:
        _write_images(r.writer, step, group.member_params(state, m), group.image_fns(m),
                      evaluator.recon_inputs[m], evaluator.sample_keys[m], r.chief)
  preempted = preempt.agreed()
  saving = [m for m in training if sched.is_checkpoint(step) or preempted or m in stopping]
  for i, m in enumerate(saving):
    if i:
      hooks.between_member_saves(step)
    runs[m].save(step, group.member_state(state, m))
  for m in sorted(stopping):
    runs[m].stop_early(step, f'{runs[m].workdir} ' if several else '')
    group.set_active(m, False)
  if preempted:
    for m in training:
      runs[m].interrupted(preempted)
    log.warning('%s received: checkpoint saved at step %d; rerun the same command to '
                'resume', preempted, step)
  return bool(preempted)


def _keep_legacy_fields(config, workdir):
  """`config`, with the older behaviour of fields that the workdir's saved run predates
  (config_lib.LEGACY_VALUES), so that it resumes as it started."""
  path = workdir / 'config.json'
  if not path.exists():
    return config
  config, changed = config_lib.adopt_legacy(run_dir.read_json(path), config)
  for key, value in changed.items():
    log.info('%s was saved before %s existed: it resumes with %s=%r', workdir, key, key, value)
  return config


def _device_summary():
  kinds = {}
  for d in jax.devices():
    kinds[f'{d.platform}:{d.device_kind}'] = kinds.get(f'{d.platform}:{d.device_kind}', 0) + 1
  return ', '.join(f'{n} x {k}' for k, n in kinds.items())


def _warn_collapse(metrics, config, where=None):
  active = metrics.get('val/active_units', metrics.get('test/active_units'))
  if active is None or config.model.type == 'ae':
    return
  total = models.total_latent_dim(config.model)
  if active < config.train.collapse_warn_fraction * total:
    log.warning('posterior collapse%s: only %d of %d latent units are active (variance of '
                'the posterior mean > %g); consider KL warm-up or free bits',
                f' in {where}' if where else '', active, total,
                config.train.active_unit_threshold)


def _write_images(writer, step, params, fns, inputs, sample_key, write):
  """Reconstructions (means, not logits) of fixed test images and fixed prior samples, as
  PNG files in images/ and in TensorBoard.

  Every process runs the (collective) decoding; only the chief (`write`) saves files.
  """
  recon_fn, sample_fn = fns
  recon = recon_fn(params, inputs)
  samples = sample_fn(params, sample_key)
  if not write:
    return
  images = writer.path.parent / 'images'
  grids = {'reconstructions': plots.interleave(jax.device_get(inputs), jax.device_get(recon)),
           'samples': jax.device_get(samples)}
  titles = {'reconstructions': f'step {step}: test images (odd rows) and reconstructions',
            'samples': f'step {step}: decoded means of fixed prior samples'}
  for name, grid in grids.items():
    plots.save_grid(grid, images / f'{name}_{step:08d}.png', title=titles[name])
    writer.image(f'images/{name}', np.clip(plots.tile(grid), 0.0, 1.0), step)
