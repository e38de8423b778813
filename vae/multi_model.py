"""Many models in one compiled program: sweep members trained together under vmap.

Members that differ only in per-model scalars (beta, free bits, KL warm-up,
learning rate, seed) and latent size train with a leading model axis: the
train step is vmapped, and each member keeps its own keys, data order and
hyperparameters (`trainer.hyperparameters`). Latent sizes join by padding
every member to the largest size D_max: a member with D latents gets its own
D-latent initialization embedded in zeros, and a latent mask under which the
padded dimensions have q = p (no KL), are zeroed before the decoder and get
zero gradients; its noise is the same as alone (`objectives.reparameterize`
draws dimension d from fold_in(key, d)). So a member trained here matches the
member trained alone, up to floating-point reduction order
(tests/test_sweeps.py checks this).

Each member's directory gets the files of a single run (config.json,
data.json, metrics.jsonl, tensorboard/, images/) and, at the end, its own
unpadded checkpoint, so `vae.load`, scripts/evaluate.py and a later single-run
resume all work on it. The stacked state is checkpointed in the group
directory, and a rerun resumes it.
"""

import functools
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae import checkpointing, config_lib, data as data_lib, evaluation, input_pipeline
from vae import metrics_io, models, optim, plots, sharding, trainer

log = logging.getLogger('vae')
# Config fields that may differ between members of one vmapped group.
VMAPPABLE = ('objective.beta', 'objective.free_bits', 'objective.warmup_epochs', 'optim.lr',
             'seed', 'model.latent_dim')


def _flat(config):
  return trainer._flatten(trainer.config_json(config))  # pylint: disable=protected-access


def check_vmappable(configs):
  """Raises ConfigError unless the configs differ only in VMAPPABLE fields."""
  base = _flat(configs[0])
  for c in configs[1:]:
    other = _flat(c)
    diff = [k for k in base if base[k] != other.get(k) and k not in VMAPPABLE]
    if diff:
      raise config_lib.ConfigError(
          f'members differ in {diff[:3]}, which vmap mode cannot stack (only {VMAPPABLE}); '
          'use --mode sequential or processes')


def resize_latent(tree, target, path_filter='gaussian_head'):
  """Pads (with zeros) or slices every leaf of `tree` to the shape of `target`'s leaf.

  Leaves under a 'gaussian_head' module hold [mean | logvar] halves on their
  last axis; each half is resized separately. Other leaves are resized at the
  end of each axis that differs (the decoder's first kernel, [D, H]).
  """
  def fit(path, a, t):
    if a.shape == t.shape:
      return a
    names = [str(getattr(p, 'key', getattr(p, 'name', p))) for p in path]
    if any(path_filter in n for n in names):
      half_a, half_t = a.shape[-1] // 2, t.shape[-1] // 2
      parts = [_resize(h, t.shape[:-1] + (half_t,)) for h in (a[..., :half_a], a[..., half_a:])]
      return jnp.concatenate(parts, axis=-1)
    return _resize(a, t.shape)

  return jax.tree_util.tree_map_with_path(fit, tree, target)


def _resize(a, shape):
  a = a[tuple(slice(0, min(s, t)) for s, t in zip(a.shape, shape))]
  pads = [(0, t - s) for s, t in zip(a.shape, shape)]
  return jnp.pad(a, pads) if any(p[1] for p in pads) else a


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


class _Members:
  """Per-member static pieces: configs, workdirs, keys, small models, hyperparameters."""

  def __init__(self, configs, workdirs, image_shape, spe, d_max):
    self.configs = configs
    self.workdirs = [pathlib.Path(w) for w in workdirs]
    self.keys = [trainer.root_keys(c.seed) for c in configs]
    self.models = [models.build_model(c.model, image_shape) for c in configs]
    base_lr = configs[0].optim.lr
    hps = []
    for c in configs:
      mask = np.zeros(d_max, np.float32)
      mask[:c.model.latent_dim] = 1.0
      hp = trainer.hyperparameters(c, spe, mask)
      hp['lr_scale'] = jnp.float32(c.optim.lr / base_lr)
      hps.append(hp)
    self.hp = stack(hps)

  def __len__(self):
    return len(self.configs)


def train_members(configs, workdirs, group_dir):
  """Trains the members together; returns one result dict per member.

  Args:
    configs: member configs differing only in VMAPPABLE fields.
    workdirs: one output directory per member.
    group_dir: directory for the stacked checkpoints (and the group's lock).

  Returns:
    list of dicts like `trainer.train_and_evaluate`'s result.
  """
  t_start = time.time()
  for c in configs:
    config_lib.validate(c)
  check_vmappable(configs)
  group_dir = trainer.prepare_workdir(group_dir)
  chief = jax.process_index() == 0
  lock = trainer.WorkdirLock(group_dir) if chief else None
  try:
    return _train_members(configs, [trainer.prepare_workdir(w) for w in workdirs], group_dir,
                          chief, t_start)
  finally:
    if lock is not None:
      lock.release()


def _train_members(configs, workdirs, group_dir, chief, t_start):
  base = configs[0]
  members_json = [trainer.config_json(c) for c in configs]
  group_config = group_dir / 'members.json'
  if group_config.exists():
    saved = json.loads(group_config.read_text())
    if len(saved) != len(members_json):
      raise config_lib.ConfigError(f'{group_dir} holds a group of {len(saved)} members, not '
                                   f'{len(members_json)}; use a new sweep root')
    for s, m in zip(saved, members_json):
      trainer.check_resume_config(s, m, group_dir)
  dataset = data_lib.load(base.data)
  image_shape = dataset.image_shape
  config_lib.validate_for_data(base, image_shape, len(dataset.train))
  sched = trainer.Schedule.from_config(base, len(dataset.train))
  d_max = max(c.model.latent_dim for c in configs)
  big_cfg = ml_collections.ConfigDict(base.to_dict())
  big_cfg.model.latent_dim = d_max
  big = models.build_model(big_cfg.model, image_shape, trainer.compute_dtype(base))
  members = _Members(configs, workdirs, image_shape, sched.steps_per_epoch, d_max)
  tx, lr_fn = optim.make_optimizer(base.optim, sched.steps_per_epoch, sched.total_steps)
  ema = base.optim.ema_decay > 0
  if chief:
    metrics_io.write_json(group_config, members_json)
    for c, w, cj in zip(configs, members.workdirs, members_json):
      metrics_io.write_json(w / 'config.json', cj)
      metrics_io.write_json(w / 'data.json', dataset.info)

  def init_all():
    states = []
    for m, model in enumerate(members.models):
      small = trainer.init_state(model, tx, image_shape, members.keys[m], ema)
      big_shapes = jax.eval_shape(functools.partial(
          trainer.init_state, big, tx, image_shape, members.keys[m], ema))
      params = resize_latent(small.params, big_shapes.params)
      states.append(trainer.TrainState(
          step=small.step, params=params, opt_state=tx.init(params),
          ema_params=params if ema else {}, rng=small.rng))
    return stack(states)

  # Members are spread over the mesh's 'model' axis; each member's batch over 'data'.
  mesh = sharding.make_model_mesh(len(members))
  repl = sharding.replicated(mesh)
  by_model = sharding.model_sharded(mesh)
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=by_model),
                          jax.eval_shape(init_all))
  if chief:
    metrics_io.write_json(group_dir / 'mesh.json', dict(mesh.shape))
  ckpt = checkpointing.Checkpointer(group_dir / 'checkpoints', base.train.keep_checkpoints)
  meta = {'config': members_json[0], 'members': members_json,
          'data': {k: dataset.info[k] for k in ('name', 'shape', 'source')}}
  big_meta = dict(meta, config=trainer.config_json(big_cfg))
  restored = ckpt.restore_latest(abstract, big_meta)
  if restored is None:
    state, resume_step = jax.jit(init_all, out_shardings=by_model)(), None
  else:
    state, _, resume_step = restored
    log.info('group %s resumed from step %d', group_dir, resume_step)
  writers = [metrics_io.MetricsWriter(w, resume_step, enabled=chief) for w in members.workdirs]

  train_images, val_images, test_images = input_pipeline.prepare_host_splits(dataset, base.data)
  train_mode, eval_mode = input_pipeline.conversion_modes(base.data)
  train_data = sharding.put(train_images, repl)
  eval_sets = {}
  for split, images in (('val', val_images), ('test', test_images)):
    if len(images):
      batches, mask = input_pipeline.pad_to_batches(images, base.train.eval_batch_size)
      eval_sets[split] = (sharding.put(batches, repl), sharding.put(mask, repl))
  step_fn = trainer.make_train_step(big, tx, lr_fn, base, train_mode, None)
  loop = trainer.chunk_loop(base)
  chunk_fn = trainer.make_train_chunk(step_fn, sched.steps_per_epoch, base.train.batch_size,
                                      False, len(members), loop=loop)
  if loop == 'device':
    chunk_fn = jax.jit(chunk_fn, donate_argnums=0)
  eval_fn = jax.jit(jax.vmap(evaluation.make_eval_fn(big, eval_mode, base.train.eval_iw_samples),
                             in_axes=(0, None, None, 0, 0)))
  data_keys = jax.device_put(jnp.stack([k['data'] for k in members.keys]), by_model)
  eval_keys = jax.device_put(jnp.stack([k['eval'] for k in members.keys]), by_model)
  members.hp = jax.device_put(members.hp, by_model)
  num_dims = int(np.prod(image_shape))
  step = int(state.step[0])
  results = [{} for _ in members.configs]
  status = 'finished'
  preempt = trainer._Preemption()  # pylint: disable=protected-access
  preempt.install()
  try:
    while step < sched.total_steps:
      end = sched.next_boundary(step)
      state, means, bad = chunk_fn(state, train_data, data_keys, members.hp, end - step)
      bad = int(bad)
      if bad >= 0:
        raise trainer.NonFiniteError(
            f'loss or gradient became NaN/Inf at step {bad} in a vmapped group ({group_dir}); '
            f'no checkpoint written after it (last good: step {ckpt.latest_step()})')
      step = end
      epoch, examples = step / sched.steps_per_epoch, step * base.train.batch_size
      means = jax.device_get(means)
      for m, writer in enumerate(writers):
        tm = {f'train/{k}': float(v[m]) for k, v in means.items()}
        writer.write('train', step, epoch, examples, tm)
        results[m].update(tm)
      val_elbo = None
      if sched.is_eval(step):
        params = state.ema_params if ema else state.params
        per_split = {s: jax.device_get(eval_fn(params, b, mk, eval_keys, members.hp['latent_mask']))
                     for s, (b, mk) in eval_sets.items()}
        for m, writer in enumerate(writers):
          em = {}
          for split, sums in per_split.items():
            sums_m = {k: v[m] for k, v in sums.items()}
            sums_m = _unpad_sums(sums_m, members.configs[m].model.latent_dim)
            em.update(evaluation.summarize_sums(sums_m, num_dims, split,
                                                base.train.active_unit_threshold))
          writer.write('eval', step, epoch, examples, em)
          results[m].update(em)
        vals = [r.get('val/elbo', r.get('test/elbo')) for r in results]
        val_elbo = float(np.mean(vals))
      preempted = preempt.agreed()
      if sched.is_checkpoint(step) or preempted:
        ckpt.save(step, state, big_meta, val_elbo)
      if preempted:
        status = preempted
        break
      log.info('group step %d/%d (%.0f s)', step, sched.total_steps, time.time() - t_start)
    if status == 'finished':
      _export_members(state, members, big, tx, image_shape, ema, step, dataset, results, chief)
  finally:
    preempt.restore()
    for w in writers:
      w.close()
    ckpt.close()
  for r in results:
    r.update(step=step, status=status)
  return results


def _unpad_sums(sums, d):
  out = dict(sums)
  for k in ('kl_dim', 'z_mean_sum', 'z_mean_sq_sum'):
    out[k] = np.asarray(sums[k])[:d]
  return out


def _export_members(state, members, big, tx, image_shape, ema, step, dataset, results, chief):
  """Writes each member's own unpadded checkpoint and final images into its workdir."""
  for m, (config, workdir, model) in enumerate(zip(members.configs, members.workdirs,
                                                   members.models)):
    small_shapes = jax.eval_shape(functools.partial(
        trainer.init_state, model, tx, image_shape, members.keys[m], ema))
    member_state = resize_latent(unstack(state, m), small_shapes)
    member_state = jax.device_put(member_state, jax.local_devices()[0])
    ckpt = checkpointing.Checkpointer(workdir / 'checkpoints', config.train.keep_checkpoints)
    meta = {'config': trainer.config_json(config),
            'data': {k: dataset.info[k] for k in ('name', 'shape', 'source')}}
    ckpt.save(step, member_state, meta, results[m].get('val/elbo'))
    ckpt.close()
    if chief:
      params = member_state.ema_params if ema else member_state.params
      z = jax.random.normal(members.keys[m]['sample'], (config.train.num_image_samples,
                                                         config.model.latent_dim))
      images = model.apply({'params': params}, z, method=model.decode_mean)
      plots.save_grid(jax.device_get(images), workdir / 'images' / f'samples_{step:08d}.png')
    metrics_io.write_json(workdir / 'done.json', {'step': step, 'num_epochs':
                                                  config.train.num_epochs, 'mode': 'vmap'})

