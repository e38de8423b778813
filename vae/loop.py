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
import json
import logging
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae import checkpointing, config_lib, data as data_lib, evaluation, input_pipeline
from vae import members as members_lib, metrics_io, models, optim, plots
from vae import progress as progress_lib
from vae import run_dir, sharding, validation
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
  base, size = configs[0], len(configs)
  cfg_jsons = [config_lib.config_json(c) for c in configs]
  for w, cj in zip(workdirs, cfg_jsons):
    run_dir.check_workdir_config(w, cj)
  if group_dir is not None:
    run_dir.check_group_config(group_dir, cfg_jsons)
  done = [run_dir.read_done(w) if run_dir.is_done(w, c.train.num_epochs) else None
          for w, c in zip(workdirs, configs)]
  if all(done):
    log.info('nothing to train: every run in %s has ended', [str(w) for w in workdirs])
    return [dict(metrics_io.last_metrics(w), step=d['step'], status=d['status'])
            for w, d in zip(workdirs, done)]

  dataset = data_lib.load(base.data)
  num_train, image_shape = len(dataset.train), dataset.image_shape
  validation.validate_for_data(base, image_shape, num_train)
  mesh = sharding.make_model_mesh(size if group_dir is not None else 1)
  n_data = sharding.data_axis_size(mesh)
  for name in ('batch_size', 'eval_batch_size'):
    config_lib.check(base.train[name] % n_data == 0,
                     f'train.{name}={base.train[name]} does not divide over the {n_data} '
                     f'devices of the data axis; use a multiple of {n_data}')
  log.info('devices: %s; mesh %s; process %d of %d', _device_summary(), dict(mesh.shape),
           jax.process_index(), jax.process_count())
  sched = Schedule.from_config(base, num_train)
  for w in workdirs:
    saved = checkpointing.CheckpointReader(w / 'checkpoints').steps()
    config_lib.check(not saved or saved[-1] <= sched.total_steps,
                     f'train.num_epochs={base.train.num_epochs} ends at step {sched.total_steps}, '
                     f'but {w} holds a checkpoint at step {saved[-1] if saved else 0}; give at '
                     'least the epochs already trained, or use a new --workdir')
  records = [run_dir.RunRecord(w, dataset.info.get('files', ()), enabled=chief and not d)
             for w, d in zip(workdirs, done)]
  if chief:
    for w, cj in zip(workdirs, cfg_jsons):
      metrics_io.write_json(w / 'config.json', cj)
      metrics_io.write_json(w / 'data.json', dataset.info)
    if group_dir is not None:
      metrics_io.write_json(group_dir / run_dir.GROUP_FILE, cfg_jsons)
      metrics_io.write_json(group_dir / 'mesh.json', dict(mesh.shape))

  train_mode, eval_mode = input_pipeline.conversion_modes(base.data)
  train_images, val_images, test_images = input_pipeline.prepare_host_splits(dataset, base.data)
  streamed = (base.data.residency == 'host' or (
      base.data.residency == 'auto' and train_images.nbytes > base.data.max_device_bytes))
  group = members_lib.Group(configs, image_shape, sched, train_mode, mesh, streamed, num_train,
                            batched=group_dir is not None)

  # Each member's checkpoints live in its own workdir; a group keeps >= 2 so that a kill
  # between two members' saves leaves a step that all of them have.
  keep = base.train.keep_checkpoints if size == 1 else max(2, base.train.keep_checkpoints)
  ckpts = [checkpointing.Checkpointer(w / 'checkpoints', keep) for w in workdirs]
  data_meta = {k: dataset.info[k] for k in ('name', 'shape', 'source')}
  metas = [{'config': cj, 'data': data_meta} for cj in cfg_jsons]
  stopped = [d is not None for d in done]
  restored = checkpointing.restore_group(
      ckpts, [group.member_abstract(m) for m in range(size)], metas,
      frozen=[m for m in range(size) if stopped[m]])
  if restored is None:
    state, resume_step = group.init(), None
    log.info('starting from scratch: %d steps (%d per epoch)%s', sched.total_steps,
             sched.steps_per_epoch,
             f', {size} members (train.member_loop {group.member_loop})' if size > 1 else '')
  else:
    member_states, resume_step = restored
    state = group.join(member_states)
    log.info('resumed from checkpoint step %d of %d', resume_step, sched.total_steps)
  for m in range(size):
    if stopped[m]:
      group.set_active(m, False)
  writers = [metrics_io.MetricsWriter(w, resume_step, enabled=chief and not stopped[m])
             for m, w in enumerate(workdirs)]
  for writer, cj in zip(writers, cfg_jsons):
    writer.text('config', '```\n' + json.dumps(cj, indent=2) + '\n```')
  # Early stopping state is recomputed from the events kept for the resumed run.
  best = [max(((e['val/elbo'], e['step']) for e in metrics_io.read_metrics(
      w / 'metrics.jsonl') if 'val/elbo' in e and resume_step is not None
               and e['step'] <= resume_step), default=(-math.inf, 0)) for w in workdirs]
  patience_steps = int(round(base.train.early_stopping_epochs * sched.steps_per_epoch))

  eval_sharding = sharding.batch_sharded(mesh, 1)
  eval_sets = {}
  for split, images in (('val', val_images), ('test', test_images)):
    if len(images):
      batches, mask = input_pipeline.pad_to_batches(images, base.train.eval_batch_size)
      eval_sets[split] = (sharding.put(batches, eval_sharding), sharding.put(mask, eval_sharding))
  # The resident training set is split over the data axis (padded to divide).
  train_data = None if streamed else sharding.put_examples(train_images, mesh)
  feeders = [input_pipeline.HostFeeder(train_images, base.train.batch_size, c.seed, sched)
             for c in configs] if streamed else None
  eval_fn = group.make_eval_fn(eval_mode, base.train.eval_iw_samples)
  sample_keys = [k['sample'] for k in group.keys]  # fixed: the same draws at every evaluation
  recon_inputs = [input_pipeline.to_float(jnp.asarray(test_images[:32]), eval_mode, k['eval'])
                  for k in group.keys]
  num_dims = int(np.prod(image_shape))

  step = resume_step or 0
  progress = progress_lib.Progress(
      sched.total_steps, 'step' if size == 1 else f'group of {size}: step',
      (base.train.batch_size * size, 'ex'), step, min_interval_s=0.0)
  # A member that had stopped before this run keeps its own last metrics and step.
  last = [dict(metrics_io.last_metrics(w), step=d['step']) if d else {}
          for w, d in zip(workdirs, done)]
  status = ['early_stopped' if s else 'finished' for s in stopped]
  first_chunk_logged = False
  signalled_early = preempt.agreed()
  if signalled_early:
    log.warning('%s received before the first step; nothing changed: rerun the same command '
                'to start', preempt.requested)
    status = [s if s == 'early_stopped' else preempt.requested for s in status]
  try:
    while step < sched.total_steps and not all(stopped) and not signalled_early:
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
            f'(last good checkpoint: step {ckpts[0].latest_step()}); lower optim.lr or set '
            'optim.grad_clip')
      step = end
      if not first_chunk_logged:
        log.info('first chunk finished %.1f s after start', time.time() - t_start)
        first_chunk_logged = True
      epoch = step / sched.steps_per_epoch
      examples = step * base.train.batch_size
      means = jax.device_get(means)
      training = [m for m in range(size) if not stopped[m]]
      for m in training:
        tm = {f'train/{k}': float(v) for k, v in group.pick(means, m).items()}
        writers[m].write('train', step, epoch, examples, tm)
        last[m].update(tm)
      progress.update(step, loss=last[training[0]].get('train/loss', float('nan')),
                      elbo=last[training[0]].get('train/elbo', float('nan')))
      val_elbo = [None] * size
      stopping = set()
      if sched.is_eval(step):
        per_split = {s: jax.device_get(eval_fn(state, b, mk)) for s, (b, mk) in eval_sets.items()}
        for m in training:
          em = {}
          for split, sums in per_split.items():
            sums_m = members_lib.unpad_sums(group.pick(sums, m),
                                            models.total_latent_dim(configs[m].model))
            em.update(evaluation.summarize_sums(sums_m, num_dims, split,
                                                base.train.active_unit_threshold))
          writers[m].write('eval', step, epoch, examples, em)
          last[m].update(em)
          val_elbo[m] = em.get('val/elbo', em.get('test/elbo'))
          if val_elbo[m] is not None and val_elbo[m] > best[m][0]:
            best[m] = (val_elbo[m], step)
          if patience_steps and step - best[m][1] >= patience_steps:
            stopping.add(m)
          _warn_collapse(em, configs[m], workdirs[m] if size > 1 else None)
          if sched.is_images(step) or m in stopping:
            _write_images(writers[m], step, group.member_params(state, m), group.image_fns(m),
                          recon_inputs[m], sample_keys[m], chief)
      preempted = preempt.agreed()
      for m in training:
        if sched.is_checkpoint(step) or preempted or m in stopping:
          ckpts[m].save(step, group.member_state(state, m), metas[m], val_elbo[m])
      for m in sorted(stopping):
        log.info('early stopping %sat step %d: val ELBO last improved at step %d (%.3f)',
                 f'{workdirs[m]} ' if size > 1 else '', step, best[m][1], best[m][0])
        stopped[m], status[m] = True, 'early_stopped'
        group.set_active(m, False)
        writers[m].hparams(_hparams(cfg_jsons[m]), last[m])
        writers[m].close()
        if chief:
          run_dir.write_done(workdirs[m], step, 'early_stopped', configs[m].train.num_epochs)
        last[m]['step'] = step
      if preempted:
        for m in training:
          if m not in stopping:
            status[m] = preempted
        log.warning('%s received: checkpoint saved at step %d; rerun the same command to '
                    'resume', preempted, step)
        break
    for m in range(size):
      if not stopped[m]:
        writers[m].hparams(_hparams(cfg_jsons[m]), last[m])
  finally:
    progress.close()
    for w in writers:
      w.close()
    for c in ckpts:
      c.close()
  for m in range(size):
    last[m].setdefault('step', step)
    if not stopped[m]:
      last[m]['step'] = step
      if status[m] == 'finished' and chief:
        run_dir.write_done(workdirs[m], step, 'finished', configs[m].train.num_epochs)
    last[m]['status'] = status[m]
    records[m].finish(status[m], resume_step or 0, last[m]['step'])
  return last


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


def _hparams(config_json):
  """The scalar fields of a run's config, for TensorBoard's HParams view."""
  return {k: v for k, v in config_lib.flatten(config_json).items()
          if isinstance(v, (bool, int, float, str))}


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
