"""The pure compiled pieces of training: the train state, the step, the multi-step chunk.

Randomness: one root key from config.seed is split once by purpose into
init, data (epoch orders), loop (per-step draws), sample (fixed prior draws
for pictures) and eval keys. Inside the step the key is fold_in(loop, step),
so a resumed run draws exactly the noise an uninterrupted run would.

A chunk is a while loop over steps with batches gathered on the device; its
length is a traced argument, so one compilation serves every chunk. With a
leading model axis (`num_models`), M models, each with its own keys, data
order and hyperparameters, train in one program (the step is vmapped).
"""

import dataclasses
import functools
import logging
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from vae import errors
from vae.data import input_pipeline
from vae import config_lib
from vae.families import objective_families, objectives
from vae.training import optim

log = logging.getLogger('vae')
KEY_PURPOSES = ('init', 'data', 'loop', 'sample', 'eval')


NonFiniteError = errors.NonFiniteError


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Everything static that the compiled step and chunk compute from: derived from the
  config (and the backend, for the 'auto' choices) in one place, `step_options`, logged
  and recorded in run.json. The per-model scalars that a vmapped group varies (beta, free
  bits, warm-up, the learning-rate ratio, active) are traced instead (`hyperparameters`).

  Attributes:
    mode: the training conversion of uint8 pixels (`input_pipeline.conversion_modes`).
    objective: what the step minimizes (`objective_families.Objective`, from
      config.objective; default: the single-sample ELBO).
    ema_decay: parameter EMA decay (0: none).
    norms_last: gradient and parameter norms at the last step of a chunk only (the
      train.norm_metrics='last' protocol) rather than at every step, averaged.
    chunk_loop: 'device' (one compiled while loop per chunk) or 'host' (dispatched steps).
    member_loop: for a vmapped group, 'vmap' or 'map'; None for a single run.
    lr_scaled: the members' learning rates differ, so each member's updates are multiplied
      by its hp['lr_scale'] (a pass over every parameter); else the factor, 1 for every
      member, is not applied.
    nan_at_step: fault injection of the tests (`settings.FaultHooks`): NaN batch at this step.
    log_batch_sharding: log the batch's sharding inside the step (diagnostics).
  """
  mode: str
  objective: Any = objective_families.Elbo()
  ema_decay: float = 0.0
  norms_last: bool = True
  chunk_loop: str = 'device'
  member_loop: Optional[str] = None
  lr_scaled: bool = False
  nan_at_step: int = -1
  log_batch_sharding: bool = False

  @property
  def last_value_metrics(self):
    """Metrics a chunk reports at their last value instead of a mean."""
    return ('grad_norm', 'param_norm') if self.norms_last else ()

  def record(self):
    """The options as a JSON-able dict (run.json); the objective as its class and fields."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    fields = (dataclasses.asdict(self.objective) if dataclasses.is_dataclass(self.objective)
              else {})
    out['objective'] = dict(fields, family=type(self.objective).__name__)
    return out


def step_options(config, backend, model_axis_size=None, hooks=None, lr_scaled=False):
  """The StepOptions of `config` on `backend` ('cpu', 'gpu', 'tpu'); `model_axis_size`:
  the devices of the mesh's model axis for a vmapped group (None: a single run);
  `lr_scaled`: the group's members have different learning rates."""
  mode, _ = input_pipeline.conversion_modes(config.data)
  loop = chunk_loop(config, backend)
  return StepOptions(
      mode=mode, objective=objective_families.build(config.objective),
      ema_decay=float(config.optim.ema_decay),
      norms_last=config.train.norm_metrics == 'last', chunk_loop=loop,
      member_loop=(None if model_axis_size is None
                   else member_loop(config, model_axis_size, backend)),
      lr_scaled=bool(lr_scaled),
      nan_at_step=-1 if hooks is None else hooks.nan_at_step,
      log_batch_sharding=hooks is not None and hooks.log_batch_sharding)


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32 []
  params: Any
  opt_state: Any
  ema_params: Any        # {} when EMA is off
  rng: jax.Array         # uint32 [2], the loop key; step keys are fold_in(rng, step)
  # Non-parameter state of the prior ({} for most; `priors.Prior.init_state`), carried
  # through steps, checkpoints and vmapped groups without the loop knowing what it is.
  prior_state: Any = flax.struct.field(default_factory=dict)
  # The objective's auxiliary parameters and their optimizer's state ({'params', 'opt_state'};
  # {} for an objective without them: `objective_families.Objective.init_aux`).
  objective_state: Any = flax.struct.field(default_factory=dict)

  def eval_params(self):
    """The parameters evaluation and checkpoints' `params` item use (EMA when kept)."""
    return self.ema_params if self.ema_params else self.params


def root_keys(seed):
  """The purpose keys: dict of init, data, loop, sample, eval (raw uint32 [2] keys)."""
  return dict(zip(KEY_PURPOSES, jax.random.split(jax.random.PRNGKey(seed), len(KEY_PURPOSES))))


def compute_dtype(config):
  return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else None


def init_state(model, tx, image_shape, keys, ema, num_train=0, objective=None):
  """A fresh TrainState (pure; use under jax.eval_shape / jit). `num_train`: the training
  examples N, which the prior's state may scale with (`priors.Prior.init_state`);
  `objective`: its auxiliary parameters, if any, are initialized from their own key."""
  k_params, k_z = jax.random.split(keys['init'])
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  params = model.init(k_params, x, k_z)['params']
  prior_state = model.prior.init_state(model.latent_dim, num_train)
  objective_state = {}
  aux_tx = None if objective is None else objective.aux_optimizer()
  if aux_tx is not None:
    aux = objective.init_aux(jax.random.fold_in(keys['init'], 2), model.latent_dim,
                             tuple(image_shape))
    objective_state = {'params': aux, 'opt_state': aux_tx.init(aux)}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=params if ema else {}, rng=keys['loop'], prior_state=prior_state,
                    objective_state=objective_state)


def hyperparameters(config, steps_per_epoch, latent_mask=None, lr_scale=1.0):
  """The per-model scalars of the train step, as arrays (a vmapped group stacks them).

  Returns:
    dict: beta, free_bits (nats/dim), warmup_steps, lr_scale (multiplies the
    optimizer's schedule), active (1: trains; 0: frozen, for a member that
    stopped early in a group), the families' vmappable fields by dotted name
    (`config_lib.vmappable_declared`) and, for a padded model, latent_mask [D].
  """
  hp = {'beta': jnp.float32(config.objective.beta),
        'free_bits': jnp.float32(config.objective.free_bits),
        'warmup_steps': jnp.float32(round(config.objective.warmup_epochs * steps_per_epoch)),
        'lr_scale': jnp.float32(lr_scale), 'active': jnp.float32(1.0)}
  for name in config_lib.vmappable_declared():  # the families' traced fields
    hp[name] = jnp.float32(config_lib.get_field(config, name))
  if latent_mask is not None:
    hp['latent_mask'] = jnp.asarray(latent_mask, jnp.float32)
  return hp


def _log_batch_sharding(sharding):
  log.info('batch sharding inside the train step: %s', sharding)


def make_train_step(model, tx, schedule_fn, options, batch_sharding, freezable=False):
  """train_step(state, x_uint8, hp, last, any_stopped, batch) -> (state, metrics, finite): one
  optimizer update of the model, and of the objective's auxiliary parameters if it has any.

  What it computes follows from its arguments alone: the model, the optimizer, the
  schedule, the StepOptions (the objective among them) and, traced, the hyperparameters
  `hp` (`hyperparameters`), so that many models with different values share one compiled
  step under vmap. With `freezable`, a model whose hp['active'] is 0 keeps its parameters
  and optimizer state (only its step counter advances).

  `any_stopped` (traced bool, unbatched, or None): whether any member of a vmapped group
  has stopped; the freezing select runs only then (None: always; False: never, for a
  member that only runs while active, `make_train_chunk`'s member_loop='map').

  `last` (traced bool, default true): whether this is the last step of a chunk. With
  `options.norms_last` the gradient and parameter norms (two passes over every parameter)
  are computed only then and are 0 at other steps (`options.last_value_metrics` names them,
  so that a chunk reports their last value instead of a mean). The loss is checked for
  NaN/Inf at every step either way.

  The prior's state hook (`priors.Prior.train_context`) runs before the loss: it gives the
  loss's extra variables and the prior's state after the batch (`TrainState.prior_state`).
  A prior that needs the training set (`needs_training_set`) gets `batch`: the batch's
  indices in the training set ('ids' [B]), the resident training set ('data', uint8) and
  whether the step starts an epoch ('epoch_start', unbatched).
  """
  objective, prior = options.objective, model.prior
  aux_tx = objective.aux_optimizer()

  def train_step(state, x_uint8, hp, last=True, any_stopped=None, batch=None):
    # Named scopes label the profile (scripts/benchmark.py --profile); they change nothing.
    k_data, k_z = jax.random.split(jax.random.fold_in(state.rng, state.step))
    x = _step_input(x_uint8, state.step, k_data, options, batch_sharding)
    step_hp = dict(hp, beta=objectives.kl_weight(state.step, hp['beta'], hp['warmup_steps']))
    with jax.named_scope('prior'):
      extra, prior_state = prior.train_context(model, state.params, state.prior_state, x,
                                               batch, jax.random.fold_in(k_data, 1))

    def loss_fn(params):
      out = objective.loss(model, dict({'params': params}, **extra), x, k_z, step_hp,
                           state.objective_state.get('params', {}))
      return out.loss, out

    with jax.named_scope('loss'):
      (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    with jax.named_scope('optimizer'):
      params, opt_state, ema = _model_update(tx, options, state, grads, hp)
    with jax.named_scope('objective'):
      objective_state, aux_metrics = _aux_update(objective, aux_tx, state.objective_state,
                                                 out.aux_input, jax.random.fold_in(k_data, 2),
                                                 step_hp)
    with jax.named_scope('norms'):
      grad_norm, param_norm = _norms(options, last, grads, params)
    metrics = {'loss': loss, 'elbo': jnp.mean(out.terms['elbo']),
               'recon': jnp.mean(out.terms['recon']), 'kl': jnp.mean(out.terms['kl']),
               'beta': step_hp['beta'], 'lr': schedule_fn(state.step) * hp['lr_scale'],
               'grad_norm': grad_norm, 'param_norm': param_norm}
    metrics.update({k: jnp.mean(v) for k, v in out.terms.items() if k not in metrics})
    metrics.update(out.metrics)
    metrics.update(aux_metrics)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if aux_metrics:
      finite = finite & jnp.isfinite(aux_metrics['aux_loss'])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema, prior_state=prior_state,
                              objective_state=objective_state)
    if freezable and any_stopped is not False:
      new_state, finite = _freeze_stopped(state, new_state, finite, hp, any_stopped)
    return new_state, metrics, finite

  return train_step


def _step_input(x_uint8, step, key, options, batch_sharding):
  """The batch as the model's floats (`options.mode`), with the tests' NaN injection
  (`settings.FaultHooks`, not even compiled in normal runs) and the batch's sharding."""
  with jax.named_scope('data'):
    x = input_pipeline.to_float(x_uint8, options.mode, key)
  if options.nan_at_step >= 0:
    x = jnp.where(step == options.nan_at_step, jnp.nan, x)
  if batch_sharding is not None:
    x = jax.lax.with_sharding_constraint(x, batch_sharding)
    if options.log_batch_sharding:
      jax.debug.inspect_array_sharding(x, callback=_log_batch_sharding)
  return x


def _model_update(tx, options, state, grads, hp):
  """(params, opt_state, ema_params) after the optimizer's update; a member's learning-rate
  ratio multiplies its updates when the group's rates differ (`options.lr_scaled`)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  if options.lr_scaled:
    updates = jax.tree.map(lambda u: u * hp['lr_scale'], updates)
  params = optax.apply_updates(state.params, updates)
  ema = (optim.ema_update(state.ema_params, params, options.ema_decay) if options.ema_decay
         else state.ema_params)
  return params, opt_state, ema


def _aux_update(objective, aux_tx, objective_state, aux_input, key, hp):
  """The objective's auxiliary parameters after one step of their own optimizer on
  `objective.aux_loss` (its input held fixed), and its metrics (aux_loss among them);
  unchanged and no metrics for an objective without them."""
  if aux_tx is None:
    return objective_state, {}
  aux_input = jax.lax.stop_gradient(aux_input)
  (aux_loss, metrics), grads = jax.value_and_grad(objective.aux_loss, has_aux=True)(
      objective_state['params'], aux_input, key, hp)
  updates, opt_state = aux_tx.update(grads, objective_state['opt_state'],
                                     objective_state['params'])
  params = optax.apply_updates(objective_state['params'], updates)
  return {'params': params, 'opt_state': opt_state}, dict(metrics, aux_loss=aux_loss)


def _norms(options, last, grads, params):
  """(gradient norm, parameter norm): at every step, or with `options.norms_last` only at a
  chunk's last step (0 elsewhere)."""
  norms = lambda g, p: (optax.tree.norm(g), optax.tree.norm(p))
  if not options.norms_last:
    return norms(grads, params)
  zero = jnp.zeros((), jnp.float32)
  return jax.lax.cond(last, norms, lambda g, p: (zero, zero), grads, params)


def _freeze_stopped(state, new_state, finite, hp, any_stopped):
  """A stopped member (hp['active'] 0) keeps its state but for the step counter. The select
  is a pass over every parameter and moment: skipped (an unbatched cond) while no member of
  the group has stopped (`any_stopped` False; None: always selected)."""
  keep = hp['active'] > 0
  frozen = state.replace(step=state.step + 1)
  select = lambda: jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_state, frozen)
  new_state = (select() if any_stopped is None
               else jax.lax.cond(any_stopped, select, lambda: new_state))
  return new_state, finite | ~keep


def make_train_chunk(train_step, steps_per_epoch, batch_size, streamed, num_models=None,
                     loop='device', num_examples=None, member_loop='vmap', last_value=(),
                     order_sharding=None, needs_batch=False):
  """chunk(state, data, data_key, hp, num_steps, order=None) -> (state, mean metrics, first
  bad step, order).

  `data` is the device-resident uint8 training set [N, H, W, C] (batches are
  gathered from an epoch permutation on the device), or, when streamed from
  the host, the chunk's batches [T, B, H, W, C] ([T, M, B, H, W, C] with a
  model axis: each model its own order). The loop stops at the first step
  whose loss or gradient is not finite and returns that step (else -1).

  loop='device' (return value to be jitted): one compiled while loop;
  `num_steps` is traced, so one compilation serves every chunk length.
  loop='host' (returned already jitted): the host dispatches one compiled step
  per iteration without waiting for it (no host sync until the chunk ends),
  for models whose convolutions XLA's CPU backend runs >10x slower inside a
  while loop (docs/benchmarks.md). Both give the same numbers.

  With `num_models` = M, `state`, `data_key` and `hp` carry a leading model
  axis (spread over the mesh's 'model' axis: `spmd_axis_name`), and metrics
  come back as [M]. `num_examples` is the number of real examples in `data`
  (default: all of it; a dataset padded to split evenly over devices has more
  rows).

  member_loop (with `num_models`, loop='device'): 'vmap' runs every step of all members
  at once (batched ops: what accelerators want); 'map' runs each active member's whole
  chunk in turn (`lax.map` over members of the unbatched loop), so that one member's
  parameters and moments stay in the CPU's cache over its steps, and a stopped member
  costs nothing (its step counter advances, as under vmap). The same batches and keys
  either way; the numbers differ from 'vmap' by float rounding (unbatched vs batched ops).

  last_value: metrics reported at their last step's value, not averaged
  (`StepOptions.last_value_metrics`).

  order: (epoch, permutation) of the resident data as the previous chunk left it (None: none
  yet). A chunk that starts inside that epoch reuses it rather than drawing the epoch's
  permutation again (a sort of the whole training set: ~23 ms for 50,000 examples on two CPU
  cores, which every chunk boundary, i.e. every log step, would otherwise pay); any other
  epoch is drawn. The returned order is the one the last step used; pass it to the next chunk.
  `order_sharding` (e.g. replicated over the mesh): where the returned order and `no_order`'s
  lie, so that the first chunk's call and later ones share one signature (one compilation).
  """
  multi = num_models is not None
  assert not (needs_batch and streamed), 'the prior needs the resident training set'
  pin = ((lambda order: order) if order_sharding is None
         else (lambda order: jax.lax.with_sharding_constraint(order, order_sharding)))
  if multi and member_loop == 'map':
    assert loop == 'device', 'member_loop=map runs the device loop'
    return _mapped_chunk(train_step, steps_per_epoch, batch_size, streamed, num_models,
                         num_examples, last_value, order_sharding, needs_batch)
  batch_axes = ({'ids': 0, 'data': None, 'epoch_start': None},) if needs_batch else ()
  step_fn = (jax.vmap(train_step, in_axes=(0, 0, 0, None, None) + batch_axes,
                      spmd_axis_name='model') if multi else train_step)
  step_of = (lambda st: st.step[0]) if multi else (lambda st: st.step)

  def perm_for(data, data_key, epoch):
    n = data.shape[0] if num_examples is None else num_examples
    fn = lambda key: input_pipeline.epoch_permutation(key, epoch, n)
    return jax.vmap(fn)(data_key) if multi else fn(data_key)

  def initial_perm(state, data, data_key, order):
    if streamed:
      return jnp.zeros((1,), jnp.int32)
    step = step_of(state)
    epoch = step // steps_per_epoch
    fresh = lambda: perm_for(data, data_key, epoch)
    if order is None:
      return fresh()
    cached_epoch, cached = order
    # A chunk that starts an epoch leaves the draw to its first step (which draws at j = 0).
    fresh_unless_first = lambda: jax.lax.cond(step % steps_per_epoch == 0,
                                              lambda: jnp.zeros_like(cached), fresh)
    return jax.lax.cond(cached_epoch == epoch, lambda: cached, fresh_unless_first)

  def order_out(state, perm):
    """(epoch of `perm`, perm) after a chunk: the last step's epoch (a chunk of no steps
    leaves the epoch of its start, whose permutation initial_perm gave)."""
    return (step_of(state) - 1) // steps_per_epoch, perm

  def one_step(i, st, perm, sums, bad, data, data_key, hp, last):
    step = step_of(st)
    if streamed:
      xb = data[i]
    else:
      with jax.named_scope('batch'):
        j = step % steps_per_epoch
        perm = jax.lax.cond(j == 0, lambda: perm_for(data, data_key, step // steps_per_epoch),
                            lambda: perm)
        gather = lambda p: input_pipeline.gather_batch(data, p, j, batch_size)
        xb = jax.vmap(gather)(perm) if multi else gather(perm)
    extra = {}
    if needs_batch:  # the prior's extras: the batch's indices, the set, an epoch's start
      ids_of = lambda p: jax.lax.dynamic_slice_in_dim(p, j * batch_size, batch_size)
      extra = {'batch': {'ids': jax.vmap(ids_of)(perm) if multi else ids_of(perm),
                         'data': data, 'epoch_start': j == 0}}
    if multi:  # vmap maps keyword arguments over axis 0: the batch goes by position
      new_st, metrics, finite = step_fn(st, xb, hp, last, jnp.any(hp['active'] <= 0),
                                        *extra.values())
    else:
      new_st, metrics, finite = step_fn(st, xb, hp, last, **extra)
    bad = jnp.where(jnp.all(finite) | (bad >= 0), bad, step)
    sums = jax.tree.map(jnp.add, sums, metrics)  # last-value metrics are 0 but at the last step
    return new_st, perm, sums, bad

  def zero_sums(state, data, hp):
    x0 = jnp.zeros(((num_models,) if multi else ()) + (batch_size,) + data.shape[-3:],
                   data.dtype)
    extra = (True, jnp.bool_(False)) if multi else (True,)
    batch = {}
    if needs_batch:
      ids = jnp.zeros(((num_models,) if multi else ()) + (batch_size,), jnp.int32)
      batch = {'batch': {'ids': ids, 'data': data, 'epoch_start': jnp.bool_(False)}}
    if multi:
      extra += tuple(batch.values())
      batch = {}
    shapes = jax.eval_shape(functools.partial(step_fn, **batch), state, x0, hp, *extra)[1]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

  def means_of(sums, n):
    n = jnp.maximum(n, 1).astype(jnp.float32)
    return {k: v if k in last_value else v / n for k, v in sums.items()}

  def chunk(state, data, data_key, hp, num_steps, order=None):
    start = step_of(state)

    def cond(carry):
      i, _, _, _, bad = carry
      return (i < num_steps) & (bad < 0)

    def body(carry):
      i, st, perm, sums, bad = carry
      st, perm, sums, bad = one_step(i, st, perm, sums, bad, data, data_key, hp,
                                     i == num_steps - 1)
      return i + 1, st, perm, sums, bad

    carry = (jnp.zeros((), jnp.int32), state, initial_perm(state, data, data_key, order),
             zero_sums(state, data, hp), jnp.full((), -1, jnp.int32))
    n, state, perm, sums, bad = jax.lax.while_loop(cond, body, carry)
    epoch = jnp.where(n > 0, (step_of(state) - 1) // steps_per_epoch,
                      start // steps_per_epoch)
    return state, means_of(sums, n), bad, pin((epoch, perm))

  def no_order(data):
    """The order to pass to a first chunk: the shapes of a real one, an epoch that never
    matches (so that every call has one signature: one compilation)."""
    n = data.shape[0] if num_examples is None else num_examples
    perm = jnp.zeros((1,) if streamed else ((num_models,) if multi else ()) + (n,), jnp.int32)
    order = jnp.full((), -1, jnp.int32), perm
    return order if order_sharding is None else jax.device_put(order, order_sharding)

  if loop == 'device':
    chunk.no_order = no_order
    return chunk

  begin = jax.jit(lambda state, data, data_key, hp, order: (
      initial_perm(state, data, data_key, order), zero_sums(state, data, hp),
      jnp.full((), -1, jnp.int32)))
  step_jit = jax.jit(one_step, donate_argnums=(1,))
  order_in = jax.jit(lambda state, perm: pin((step_of(state) // steps_per_epoch, perm)))
  finish = jax.jit(means_of)
  end_order = jax.jit(lambda state, perm: pin(order_out(state, perm)))

  def host_chunk(state, data, data_key, hp, num_steps, order=None):
    perm, sums, bad = begin(state, data, data_key, hp, order)
    num_steps = int(num_steps)
    for i in range(num_steps):
      state, perm, sums, bad = step_jit(jnp.int32(i), state, perm, sums, bad, data, data_key, hp,
                                        jnp.bool_(i == num_steps - 1))
    order = end_order(state, perm) if num_steps else order_in(state, perm)
    return state, finish(sums, jnp.int32(num_steps)), bad, order

  host_chunk.no_order = no_order
  return host_chunk


def _mapped_chunk(train_step, steps_per_epoch, batch_size, streamed, num_models,
                  num_examples, last_value, order_sharding, needs_batch):
  """make_train_chunk's member_loop='map': the members' chunks one after another."""
  member_step = functools.partial(train_step, any_stopped=False)
  run_member = make_train_chunk(member_step, steps_per_epoch, batch_size, streamed, loop='device',
                                num_examples=num_examples, last_value=last_value,
                                needs_batch=needs_batch)
  no_step = jnp.iinfo(jnp.int32).max

  def chunk(state, data, data_key, hp, num_steps, order=None):
    def member(args):
      m, st, key, h, o = args
      d = jax.lax.dynamic_index_in_dim(data, m, 1, keepdims=False) if streamed else data
      shapes = jax.eval_shape(run_member, st, d, key, h, num_steps, o)

      def frozen():
        # A frozen member keeps the order it had (none: an epoch that never matches).
        kept = o if o is not None else (jnp.full((), -1, jnp.int32),
                                        jnp.zeros(shapes[3][1].shape, shapes[3][1].dtype))
        return (st.replace(step=st.step + num_steps),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1]),
                jnp.full((), -1, jnp.int32), kept)

      return jax.lax.cond(h['active'] > 0, lambda: run_member(st, d, key, h, num_steps, o),
                          frozen)

    members = jnp.arange(num_models, dtype=jnp.int32)
    state, means, bads, order = jax.lax.map(member, (members, state, data_key, hp, order))
    first = jnp.min(jnp.where(bads >= 0, bads, no_step))
    if order_sharding is not None:
      order = jax.lax.with_sharding_constraint(order, order_sharding)
    return state, means, jnp.where(first == no_step, -1, first), order

  def no_order(data):
    epoch, perm = run_member.no_order(data)
    order = (jnp.full((num_models,), epoch), jnp.zeros((num_models,) + perm.shape, perm.dtype))
    return order if order_sharding is None else jax.device_put(order, order_sharding)

  chunk.no_order = no_order
  return chunk


def member_loop(config, model_axis_size, backend):
  """'vmap' or 'map' for `make_train_chunk`, from train.member_loop ('auto': map on the
  CPU backend when the members share one device and the device loop runs, else vmap;
  runs saved before the field keep vmap, config_lib.LEGACY_VALUES)."""
  if chunk_loop(config, backend) != 'device':
    return 'vmap'
  if config.train.member_loop != 'auto':
    return config.train.member_loop
  return 'map' if backend == 'cpu' and model_axis_size == 1 else 'vmap'


def chunk_loop(config, backend):
  """'device' or 'host' for `make_train_chunk`, from train.loop ('auto': host for conv on
  the CPU backend, whose convolutions run >10x slower inside a while loop; the device loop
  everywhere else: on an H200 it trains the default conv model 1.6x faster than the host
  loop, docs/benchmarks.md)."""
  if config.train.loop != 'auto':
    return config.train.loop
  return 'host' if config.model.arch == 'conv' and backend == 'cpu' else 'device'
