"""Training: the train state, the compiled multi-step chunk, and `train_and_evaluate`.

Randomness: one root key from config.seed is split once by purpose into
init, data (epoch orders), loop (per-step draws), sampling (fixed prior draws
for pictures) and eval keys. Inside the step the key is fold_in(loop, step),
so a resumed run draws exactly the noise an uninterrupted run would.

Time: durations in the config are in epochs; they are converted to steps once
(`Schedule`). The host calls one compiled chunk (a while loop over steps,
batches gathered on the device) up to the next boundary: a log, eval or
checkpoint step or the end. A chunk never recompiles: its length is a traced
argument. Train metrics are averaged over the chunk, and resume always starts
at a boundary, so a resumed run logs the same numbers as an uninterrupted one.
"""

import dataclasses
import fcntl
import functools
import json
import logging
import math
import os
import pathlib
import signal
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae import checkpointing, config_lib, data as data_lib, evaluation, input_pipeline
from vae import metrics_io, models, objectives, optim, plots, sharding

log = logging.getLogger('vae')
# Config fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = ('train.num_epochs',)


class NonFiniteError(FloatingPointError):
  """The loss or gradient became NaN or Inf; the message names the step."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32 []
  params: Any
  opt_state: Any
  ema_params: Any        # {} when EMA is off
  rng: jax.Array         # uint32 [2], the loop key; step keys are fold_in(rng, step)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """All durations in steps, converted once from the config's epochs."""
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, config, num_train):
    t = config.train
    spe = num_train // t.batch_size
    to_steps = lambda epochs: max(1, int(round(epochs * spe)))
    total = to_steps(t.num_epochs)
    if config.optim.schedule == 'iwae_staircase':
      total = to_steps(optim.total_iwae_epochs(config.optim.iwae_stages))
    return cls(spe, total, t.log_every_steps, to_steps(t.eval_every_epochs),
               to_steps(t.checkpoint_every_epochs))

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


def root_keys(seed):
  """The purpose keys: dict of init, data, loop, sample, eval (raw uint32 [2] keys)."""
  names = ('init', 'data', 'loop', 'sample', 'eval')
  return dict(zip(names, jax.random.split(jax.random.PRNGKey(seed), len(names))))


def compute_dtype(config):
  return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else None


def init_state(model, tx, image_shape, keys, ema):
  """A fresh TrainState (pure; use under jax.eval_shape / jit)."""
  k_params, k_z = jax.random.split(keys['init'])
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  params = model.init(k_params, x, k_z)['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=params if ema else {}, rng=keys['loop'])


def hyperparameters(config, steps_per_epoch, latent_mask=None):
  """The per-model scalars of the train step, as arrays (a sweep stacks them).

  Returns:
    dict: beta, free_bits (nats/dim), warmup_steps, lr_scale (multiplies the
    optimizer's schedule) and, for a padded model, latent_mask [D].
  """
  hp = {'beta': jnp.float32(config.objective.beta),
        'free_bits': jnp.float32(config.objective.free_bits),
        'warmup_steps': jnp.float32(round(config.objective.warmup_epochs * steps_per_epoch)),
        'lr_scale': jnp.float32(1.0)}
  if latent_mask is not None:
    hp['latent_mask'] = jnp.asarray(latent_mask, jnp.float32)
  return hp


def make_train_step(model, tx, schedule_fn, config, mode, batch_sharding):
  """train_step(state, x_uint8, hp) -> (state, metrics, finite): one optimizer update.

  `hp` holds the per-model scalars (`hyperparameters`), traced, so that many
  models with different values can share one compiled step under vmap.
  """
  num_samples = config.objective.num_samples
  ema_decay = config.optim.ema_decay
  # Fault injection for the reliability tests (docs/reliability.md): makes the
  # batch NaN at one step. Unset in normal runs, and then not even compiled in.
  nan_step = int(os.environ.get('VAE_INJECT_NAN_AT_STEP', '-1'))

  def train_step(state, x_uint8, hp):
    k_data, k_z = jax.random.split(jax.random.fold_in(state.rng, state.step))
    x = input_pipeline.to_float(x_uint8, mode, k_data)
    if nan_step >= 0:
      x = jnp.where(state.step == nan_step, jnp.nan, x)
    if batch_sharding is not None:
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
    beta = objectives.kl_weight(state.step, hp['beta'], hp['warmup_steps'])
    latent_mask = hp.get('latent_mask')

    def loss_fn(params):
      loss, terms = objectives.per_example_objective(
          model, {'params': params}, x, k_z, beta=beta, free_bits=hp['free_bits'],
          num_samples=num_samples, latent_mask=latent_mask,
          estimator=config.objective.estimator)
      return jnp.mean(loss), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * hp['lr_scale'], updates)
    params = optax.apply_updates(state.params, updates)
    ema = (optim.ema_update(state.ema_params, params, ema_decay) if ema_decay
           else state.ema_params)
    grad_norm = optax.tree.norm(grads)
    metrics = {'loss': loss, 'elbo': jnp.mean(terms['elbo']), 'recon': jnp.mean(terms['recon']),
               'kl': jnp.mean(terms['kl']), 'beta': beta,
               'lr': schedule_fn(state.step) * hp['lr_scale'],
               'grad_norm': grad_norm, 'param_norm': optax.tree.norm(params)}
    if 'iwae' in terms:
      metrics['iwae'] = jnp.mean(terms['iwae'])
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema)
    return new_state, metrics, finite

  return train_step


def make_train_chunk(train_step, steps_per_epoch, batch_size, streamed, num_models=None,
                     loop='device', num_examples=None):
  """chunk(state, data, data_key, hp, num_steps) -> (state, mean metrics, first bad step).

  `data` is the device-resident uint8 training set [N, H, W, C] (batches are
  gathered from an epoch permutation on the device), or, when streamed from
  the host, the chunk's batches [T, B, H, W, C]. The loop stops at the first
  step whose loss or gradient is not finite and returns that step (else -1).

  loop='device' (return value to be jitted): one compiled while loop;
  `num_steps` is traced, so one compilation serves every chunk length.
  loop='host' (returned already jitted): the host dispatches one compiled step
  per iteration without waiting for it (no host sync until the chunk ends),
  for models whose convolutions XLA's CPU backend runs >10x slower inside a
  while loop (docs/benchmarks.md). Both give the same numbers.

  With `num_models` = M, `state`, `data_key` and `hp` carry a leading model
  axis: M models, each with its own keys, data order and hyperparameters,
  train in one program (the step is vmapped); metrics come back as [M].
  `num_examples` is the number of real examples in `data` (default: all of
  it; a dataset padded to split evenly over devices has more rows).
  """
  multi = num_models is not None
  step_fn = jax.vmap(train_step) if multi else train_step
  step_of = (lambda st: st.step[0]) if multi else (lambda st: st.step)

  def perm_for(data, data_key, epoch):
    n = data.shape[0] if num_examples is None else num_examples
    fn = lambda key: input_pipeline.epoch_permutation(key, epoch, n)
    return jax.vmap(fn)(data_key) if multi else fn(data_key)

  def initial_perm(state, data, data_key):
    if streamed:
      return jnp.zeros((1,), jnp.int32)
    return perm_for(data, data_key, step_of(state) // steps_per_epoch)

  def one_step(i, st, perm, sums, bad, data, data_key, hp):
    step = step_of(st)
    if streamed:
      xb = data[i]
      if multi:
        xb = jnp.broadcast_to(xb, (num_models,) + xb.shape)
    else:
      j = step % steps_per_epoch
      perm = jax.lax.cond(j == 0, lambda: perm_for(data, data_key, step // steps_per_epoch),
                          lambda: perm)
      gather = lambda p: input_pipeline.gather_batch(data, p, j, batch_size)
      xb = jax.vmap(gather)(perm) if multi else gather(perm)
    new_st, metrics, finite = step_fn(st, xb, hp)
    bad = jnp.where(jnp.all(finite) | (bad >= 0), bad, step)
    sums = jax.tree.map(jnp.add, sums, metrics)
    return new_st, perm, sums, bad

  def zero_sums(state, data, hp):
    x0 = jnp.zeros(((num_models,) if multi else ()) + (batch_size,) + data.shape[-3:],
                   data.dtype)
    shapes = jax.eval_shape(step_fn, state, x0, hp)[1]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

  def means_of(sums, n):
    return jax.tree.map(lambda s: s / jnp.maximum(n, 1).astype(jnp.float32), sums)

  def chunk(state, data, data_key, hp, num_steps):
    def cond(carry):
      i, _, _, _, bad = carry
      return (i < num_steps) & (bad < 0)

    def body(carry):
      i, st, perm, sums, bad = carry
      st, perm, sums, bad = one_step(i, st, perm, sums, bad, data, data_key, hp)
      return i + 1, st, perm, sums, bad

    carry = (jnp.zeros((), jnp.int32), state, initial_perm(state, data, data_key),
             zero_sums(state, data, hp), jnp.full((), -1, jnp.int32))
    n, state, _, sums, bad = jax.lax.while_loop(cond, body, carry)
    return state, means_of(sums, n), bad

  if loop == 'device':
    return chunk

  start = jax.jit(lambda state, data, data_key, hp: (
      initial_perm(state, data, data_key), zero_sums(state, data, hp),
      jnp.full((), -1, jnp.int32)))
  step_jit = jax.jit(one_step, donate_argnums=(1,))
  finish = jax.jit(means_of)

  def host_chunk(state, data, data_key, hp, num_steps):
    perm, sums, bad = start(state, data, data_key, hp)
    num_steps = int(num_steps)
    for i in range(num_steps):
      state, perm, sums, bad = step_jit(jnp.int32(i), state, perm, sums, bad, data, data_key, hp)
    return state, finish(sums, jnp.int32(num_steps)), bad

  return host_chunk


def chunk_loop(config):
  """'device' or 'host' for `make_train_chunk`, from train.loop ('auto': host for conv)."""
  if config.train.loop != 'auto':
    return config.train.loop
  return 'host' if config.model.arch == 'conv' else 'device'


# ----------------------------------------------------------------------------- workdir


class WorkdirLock:
  """An exclusive flock on WORKDIR/.lock: a second trainer on the same workdir fails."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / '.lock'
    self._f = open(self.path, 'a+')
    try:
      fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self._f.seek(0)
      owner = self._f.read().strip() or 'unknown'
      self._f.close()
      raise config_lib.ConfigError(
          f'workdir {workdir} is in use by another trainer (pid {owner}); wait for it to '
          'finish or use another --workdir') from None
    self._f.seek(0)
    self._f.truncate()
    self._f.write(str(os.getpid()))
    self._f.flush()

  def release(self):
    fcntl.flock(self._f, fcntl.LOCK_UN)
    self._f.close()


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def config_json(config):
  return json.loads(config.to_json_best_effort())


def check_resume_config(saved, current, workdir):
  """Raises ConfigError if the workdir's config.json differs in a structural field."""
  a, b = _flatten(saved), _flatten(current)
  # A field added to the schema after the run was saved is absent from `saved`;
  # its default reproduces the older behaviour, so it is not a difference.
  diffs = [k for k in sorted(a) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]
  if diffs:
    shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diffs[:3])
    more = f' (+{len(diffs) - 3} more)' if len(diffs) > 3 else ''
    raise config_lib.ConfigError(
        f'workdir {workdir} holds a run with another config ({shown}{more}); only '
        f'{", ".join(RESUMABLE_CHANGES)} may change on resume: use a new --workdir')


def prepare_workdir(workdir):
  """Creates the workdir, or fails with one line if it cannot be written."""
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write_test.{jax.process_index()}'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise config_lib.ConfigError(f'cannot write to workdir {workdir} ({e.strerror}); choose a '
                                 'writable --workdir') from None
  return workdir


# ----------------------------------------------------------------------------- the loop


class _Preemption:
  """Turns SIGTERM / SIGINT into a flag checked at chunk boundaries."""

  def __init__(self):
    self.requested = None
    self._old = {}

  def install(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = signal.Signals(signum).name

  def agreed(self):
    """Whether any process was signalled; all processes agree, so they stop at the same
    boundary (a process that stopped alone would leave the others in a collective)."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array(self.requested is not None))
    if np.any(flags) and self.requested is None:
      self.requested = 'SIGTERM'
    return self.requested

  def restore(self):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


class _Progress:
  """A one-line progress bar on a terminal; plain log lines otherwise."""

  def __init__(self, total_steps, batch_size, start_step):
    self.total, self.batch = total_steps, batch_size
    self.t0, self.s0 = time.time(), start_step
    self.tty = sys.stderr.isatty()

  def update(self, step, metrics):
    dt = max(time.time() - self.t0, 1e-9)
    rate = (step - self.s0) / dt
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    line = (f'step {step}/{self.total} | {rate:.1f} steps/s {rate * self.batch:.0f} ex/s | '
            f'ETA {eta:.0f}s | loss {metrics.get("train/loss", float("nan")):.2f} '
            f'elbo {metrics.get("train/elbo", float("nan")):.2f}')
    if self.tty:
      sys.stderr.write('\r' + line + ' ' * 4)
      sys.stderr.flush()
    else:
      log.info(line)

  def close(self):
    if self.tty:
      sys.stderr.write('\n')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains and evaluates the model that `config` describes, writing into `workdir`.

  Running it again on the same workdir resumes from the newest good checkpoint.

  Args:
    config: a config from configs/ (see vae/config_lib.py for every field).
    workdir: output directory (created if needed).

  Returns:
    dict with the last logged metrics, 'step' and 'status' ('finished' or the
    name of the signal that preempted the run).

  Raises:
    ConfigError, DataError, CheckpointError: bad input, before any compilation.
    NonFiniteError: the loss or gradient became NaN/Inf (no checkpoint written).
  """
  t_start = time.time()
  config_lib.validate(config)
  chief = jax.process_index() == 0
  workdir = prepare_workdir(workdir)
  lock = WorkdirLock(workdir) if chief else None
  try:
    return _train(config, workdir, chief, t_start)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir, chief, t_start):
  cfg_json = config_json(config)
  config_path = workdir / 'config.json'
  if config_path.exists():
    check_resume_config(json.loads(config_path.read_text()), cfg_json, workdir)

  dataset = data_lib.load(config.data)
  num_train = len(dataset.train)
  image_shape = dataset.image_shape
  config_lib.validate_for_data(config, image_shape, num_train)
  mesh = sharding.make_mesh()
  n_data = sharding.data_axis_size(mesh)
  for name in ('batch_size', 'eval_batch_size'):
    size = config.train[name]
    if size % n_data:
      raise config_lib.ConfigError(
          f'train.{name}={size} does not divide over the {n_data} devices of the data axis; '
          f'use a multiple of {n_data}')
  if chief:
    metrics_io.write_json(config_path, cfg_json)
    metrics_io.write_json(workdir / 'data.json', dataset.info)

  model = models.build_model(config.model, image_shape, compute_dtype(config))
  sched = Schedule.from_config(config, num_train)
  tx, lr_fn = optim.make_optimizer(config.optim, sched.steps_per_epoch, sched.total_steps)
  keys = root_keys(config.seed)
  train_mode, eval_mode = input_pipeline.conversion_modes(config.data)
  repl = sharding.replicated(mesh)
  num_dims = int(np.prod(image_shape))

  init_fn = functools.partial(init_state, model, tx, image_shape, keys,
                              config.optim.ema_decay > 0)
  abstract = jax.eval_shape(init_fn)
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
                          abstract)
  ckpt = checkpointing.Checkpointer(workdir / 'checkpoints', config.train.keep_checkpoints)
  meta = {'config': cfg_json, 'data': {k: dataset.info[k] for k in ('name', 'shape', 'source')}}
  restored = ckpt.restore_latest(abstract, meta)
  if restored is None:
    state = jax.jit(init_fn, out_shardings=repl)()
    resume_step = None
    log.info('starting from scratch: %d steps (%d per epoch)', sched.total_steps,
             sched.steps_per_epoch)
  else:
    state, _, resume_step = restored
    log.info('resumed from checkpoint step %d of %d', resume_step, sched.total_steps)
  writer = metrics_io.MetricsWriter(workdir, resume_step, enabled=chief)
  # Early stopping state is recomputed from the events kept for the resumed run.
  best_val = max(((e['val/elbo'], e['step']) for e in metrics_io.read_metrics(
      workdir / 'metrics.jsonl') if 'val/elbo' in e and resume_step is not None
                  and e['step'] <= resume_step), default=(-math.inf, 0))
  patience_steps = int(round(config.train.early_stopping_epochs * sched.steps_per_epoch))

  # Data onto the device, once.
  train_images, val_images, test_images = input_pipeline.prepare_host_splits(
      dataset, config.data)
  streamed = (config.data.residency == 'host' or (
      config.data.residency == 'auto' and train_images.nbytes > config.data.max_device_bytes))
  eval_sharding = sharding.batch_sharded(mesh, 1)
  eval_sets = {}
  for split, images in (('val', val_images), ('test', test_images)):
    if len(images):
      batches, mask = input_pipeline.pad_to_batches(images, config.train.eval_batch_size)
      eval_sets[split] = (sharding.put(batches, eval_sharding), sharding.put(mask, eval_sharding))
  # The resident training set is split over the data axis (padded to divide).
  train_data = None if streamed else sharding.put_examples(train_images, mesh)

  train_step = make_train_step(model, tx, lr_fn, config, train_mode,
                               sharding.batch_sharded(mesh))
  hp = hyperparameters(config, sched.steps_per_epoch)
  loop = chunk_loop(config)
  chunk_fn = make_train_chunk(train_step, sched.steps_per_epoch, config.train.batch_size,
                              streamed, loop=loop, num_examples=num_train)
  if loop == 'device':
    chunk_fn = jax.jit(chunk_fn, donate_argnums=0)
  eval_fn = jax.jit(evaluation.make_eval_fn(model, eval_mode, config.train.eval_iw_samples))
  recon_fn = jax.jit(lambda p, x: model.apply({'params': p}, x, method=model.encode)[0])
  decode_fn = jax.jit(lambda p, z: model.apply({'params': p}, z, method=model.decode_mean))
  prior_z = jax.random.normal(keys['sample'], (config.train.num_image_samples,
                                               config.model.latent_dim))
  recon_inputs = input_pipeline.to_float(
      jnp.asarray(test_images[:32]), eval_mode, keys['eval'])
  feeder = _HostFeeder(train_images, config, sched) if streamed else None

  preempt = _Preemption()
  preempt.install()
  progress = _Progress(sched.total_steps, config.train.batch_size, int(state.step))
  step = int(state.step)
  last = {}
  status = 'finished'
  first_step_logged = False
  try:
    while step < sched.total_steps:
      end = sched.next_boundary(step)
      if streamed:
        batches = sharding.put(feeder.batches(step, end), sharding.batch_sharded(mesh, 1))
        state, means, bad = chunk_fn(state, batches, keys['data'], hp, end - step)
      else:
        state, means, bad = chunk_fn(state, train_data, keys['data'], hp, end - step)
      bad = int(bad)
      if bad >= 0:
        good = ckpt.latest_step()
        raise NonFiniteError(
            f'loss or gradient became NaN/Inf at step {bad}; no checkpoint written after it '
            f'(last good checkpoint: step {good}); lower optim.lr or set optim.grad_clip')
      step = end
      if not first_step_logged:
        log.info('first chunk finished %.1f s after start', time.time() - t_start)
        first_step_logged = True
      epoch = step / sched.steps_per_epoch
      examples = step * config.train.batch_size
      train_metrics = {f'train/{k}': float(v) for k, v in jax.device_get(means).items()}
      writer.write('train', step, epoch, examples, train_metrics)
      last.update(train_metrics)
      progress.update(step, last)
      val_elbo = None
      if sched.is_eval(step):
        params = state.ema_params if config.optim.ema_decay else state.params
        eval_metrics = {}
        for split, (batches, mask) in eval_sets.items():
          sums = eval_fn(params, batches, mask, keys['eval'])
          eval_metrics.update(evaluation.summarize_sums(
              sums, num_dims, split, config.train.active_unit_threshold))
        writer.write('eval', step, epoch, examples, eval_metrics)
        last.update(eval_metrics)
        val_elbo = eval_metrics.get('val/elbo', eval_metrics.get('test/elbo'))
        if val_elbo is not None and val_elbo > best_val[0]:
          best_val = (val_elbo, step)
        if patience_steps and step - best_val[1] >= patience_steps:
          status = 'early_stopped'
        _warn_collapse(eval_metrics, config)
        _write_images(workdir, step, params, recon_fn, decode_fn, recon_inputs, prior_z, chief)
      preempted = preempt.agreed()
      if sched.is_checkpoint(step) or preempted or status == 'early_stopped':
        ckpt.save(step, state, meta, val_elbo)
      if status == 'early_stopped':
        log.info('early stopping at step %d: val ELBO last improved at step %d (%.3f)', step,
                 best_val[1], best_val[0])
        break
      if preempted:
        status = preempted
        log.warning('%s received: checkpoint saved at step %d; rerun the same command to '
                    'resume', status, step)
        break
  finally:
    progress.close()
    preempt.restore()
    writer.close()
    ckpt.close()
  last.update(step=step, status=status)
  if chief and status in ('finished', 'early_stopped'):
    metrics_io.write_json(workdir / 'done.json', {'step': step, 'status': status,
                                                  'num_epochs': config.train.num_epochs})
  return last


def _warn_collapse(metrics, config):
  active = metrics.get('val/active_units', metrics.get('test/active_units'))
  if active is None or config.model.type == 'ae':
    return
  if active < config.train.collapse_warn_fraction * config.model.latent_dim:
    log.warning('posterior collapse: only %d of %d latent units are active (variance of the '
                'posterior mean > %g); consider KL warm-up or free bits', active,
                config.model.latent_dim, config.train.active_unit_threshold)


def _write_images(workdir, step, params, recon_fn, decode_fn, inputs, prior_z, write):
  """Reconstructions (means, not logits) of fixed test images and fixed prior samples.

  Every process runs the (collective) decoding; only the chief (`write`) saves files.
  """
  recon = decode_fn(params, recon_fn(params, inputs))
  samples = decode_fn(params, prior_z)
  if not write:
    return
  plots.save_grid(plots.interleave(jax.device_get(inputs), jax.device_get(recon)),
                  workdir / 'images' / f'reconstructions_{step:08d}.png')
  plots.save_grid(jax.device_get(samples), workdir / 'images' / f'samples_{step:08d}.png')


class _HostFeeder:
  """Streams batches of a dataset too large for the device, one chunk ahead.

  Batch order is a per-epoch permutation seeded by (config.seed, epoch), so a
  resumed run sees the same batches. The next chunk's array is assembled in a
  background thread while the device trains on the current one.
  """

  def __init__(self, images, config, sched):
    from concurrent import futures  # pylint: disable=g-import-not-at-top
    self.images, self.sched = images, sched
    self.batch, self.seed = config.train.batch_size, config.seed
    self.pool = futures.ThreadPoolExecutor(1)
    self.pending = None

  def _assemble(self, start, end):
    spe, out, perms = self.sched.steps_per_epoch, [], {}
    for step in range(start, end):
      epoch = step // spe
      if epoch not in perms:
        perms[epoch] = input_pipeline.host_epoch_permutation(self.seed, epoch, len(self.images))
      j = step % spe
      out.append(self.images[np.sort(perms[epoch][j * self.batch:(j + 1) * self.batch])])
    # Pad to the longest chunk so every chunk has one shape (one compilation).
    out += [np.zeros_like(out[0])] * (self.sched.max_chunk - len(out))
    return np.stack(out)

  def batches(self, start, end):
    if self.pending is not None and self.pending[0] == (start, end):
      result = self.pending[1].result()
    else:
      result = self._assemble(start, end)
    nxt = self.sched.next_boundary(end)
    if end < self.sched.total_steps:
      self.pending = ((end, nxt), self.pool.submit(self._assemble, end, nxt))
    return result

