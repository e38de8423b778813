"""The pure compiled pieces of training: the train state, its keys, the step's options and
the step (the chunk that runs many steps in one program: vae/training/chunks.py).

Randomness: one root key from config.seed is split once by purpose into
init, data (epoch orders), loop (per-step draws), sample (fixed prior draws
for pictures) and eval keys. Inside the step the key is fold_in(loop, step),
so a resumed run draws exactly the noise an uninterrupted run would.

The step is pure: what it computes follows from the model, the optimizer, the
StepOptions (the objective among them) and the traced hyperparameters, so M models,
each with its own keys, data order and hyperparameters, train in one program under vmap.
"""

import dataclasses
import logging
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from vae import errors
from vae.data import input_pipeline
from vae import config_lib
from vae.families import models, objective_families, objectives
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

  def summary(self):
    """One readable line for the log: the objective and the loops (run.json has all)."""
    kind = type(self.objective).__name__
    members = f', members {self.member_loop}' if self.member_loop else ''
    return (f'objective {kind}, {self.chunk_loop} loop{members}, pixels {self.mode}'
            + (f', EMA {self.ema_decay}' if self.ema_decay else ''))

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
  member that only runs while active, `chunks.make_train_chunk`'s member_loop='map').

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


def member_loop(config, model_axis_size, backend):
  """'vmap' or 'map' for `chunks.make_train_chunk`, from train.member_loop ('auto': map on the
  CPU backend when the members share one device and the device loop runs, else vmap;
  runs saved before the field keep vmap, config_lib.LEGACY_VALUES)."""
  if chunk_loop(config, backend) != 'device':
    return 'vmap'
  if config.train.member_loop != 'auto':
    return config.train.member_loop
  return 'map' if backend == 'cpu' and model_axis_size == 1 else 'vmap'


def chunk_loop(config, backend):
  """'device' or 'host' for `chunks.make_train_chunk`, from train.loop ('auto': host for conv on
  the CPU backend, whose convolutions run >10x slower inside a while loop; the device loop
  everywhere else: on an H200 it trains the default conv model 1.6x faster than the host
  loop, docs/benchmarks.md)."""
  if config.train.loop != 'auto':
    return config.train.loop
  return models.cpu_chunk_loop(config.model) if backend == 'cpu' else 'device'
