"""Optimizers and learning-rate schedules (optax), built from `config.optim`.

All durations arrive in epochs and are converted to steps here, once.
"""

import jax
import optax

from vae.config_lib import check

OPTIMIZERS = ('adam', 'adamw', 'adagrad', 'sgd')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'iwae_staircase')


def check_config(oc):
  """Checks the fields of `config.optim` (ConfigError naming the field)."""
  check(oc.name in OPTIMIZERS, f'optim.name={oc.name!r} is unknown; choose one of {OPTIMIZERS}')
  check(oc.schedule in SCHEDULES,
        f'optim.schedule={oc.schedule!r} is unknown; choose one of {SCHEDULES}')
  check(oc.lr > 0, f'optim.lr={oc.lr} must be > 0')
  check(0 <= oc.ema_decay < 1, 'optim.ema_decay must be in [0, 1)')
  check(oc.grad_clip >= 0, 'optim.grad_clip must be >= 0')


def check_run_length(oc, num_epochs):
  """A learning-rate warm-up must end inside the run (else optim.lr is never reached, and
  warmup_cosine has no decay left)."""
  check(oc.warmup_epochs == 0 or oc.schedule not in ('constant', 'warmup_cosine')
        or oc.warmup_epochs < num_epochs,
        f'optim.warmup_epochs={oc.warmup_epochs} is not shorter than train.num_epochs='
        f'{num_epochs}: the learning rate would never reach optim.lr; shorten the warm-up')


def iwae_staircase_boundaries(steps_per_epoch, num_stages):
  """Stage i lasts 3^i epochs (Burda et al. 2015); returns the stage end steps."""
  ends, total = [], 0
  for i in range(num_stages):
    total += 3 ** i
    ends.append(total * steps_per_epoch)
  return ends


def learning_rate_schedule(oc, steps_per_epoch, total_steps):
  """Returns step -> learning rate for `oc.schedule`."""
  warmup = int(round(oc.warmup_epochs * steps_per_epoch))
  if oc.schedule == 'constant':
    if warmup:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, oc.lr, warmup), optax.constant_schedule(oc.lr)], [warmup])
    return optax.constant_schedule(oc.lr)
  if oc.schedule == 'cosine':
    return optax.cosine_decay_schedule(oc.lr, max(total_steps, 1))
  if oc.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, oc.lr, max(warmup, 1), max(total_steps, 2))
  if oc.schedule == 'iwae_staircase':
    ends = iwae_staircase_boundaries(steps_per_epoch, oc.iwae_stages)
    # piecewise_constant_schedule multiplies the value at each boundary.
    factor = 10.0 ** (-1.0 / 7.0)
    return optax.piecewise_constant_schedule(oc.lr, {e: factor for e in ends[:-1]})
  raise ValueError(f'unknown optim.schedule {oc.schedule!r}; choose one of {SCHEDULES}')


def make_optimizer(oc, steps_per_epoch, total_steps):
  """Builds the optax transformation.

  Args:
    oc: `config.optim`.
    steps_per_epoch: training steps per epoch.
    total_steps: length of the run in steps (for decaying schedules).

  Returns:
    (tx, schedule): the GradientTransformation and the step -> lr function.
  """
  schedule = learning_rate_schedule(oc, steps_per_epoch, total_steps)
  parts = []
  if oc.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(oc.grad_clip))
  if oc.name == 'adam':
    parts.append(optax.scale_by_adam(b1=oc.b1, b2=oc.b2, eps=oc.eps))
    if oc.weight_decay > 0:  # L2 penalty folded into the gradient (coupled), as in Adam + L2
      parts.insert(len(parts) - 1, optax.add_decayed_weights(oc.weight_decay))
  elif oc.name == 'adamw':
    parts.append(optax.scale_by_adam(b1=oc.b1, b2=oc.b2, eps=oc.eps))
    parts.append(optax.add_decayed_weights(oc.weight_decay))
  elif oc.name == 'adagrad':
    if oc.weight_decay > 0:
      parts.append(optax.add_decayed_weights(oc.weight_decay))
    parts.append(optax.scale_by_rss(initial_accumulator_value=0.1, eps=1e-7))
  elif oc.name == 'sgd':
    if oc.weight_decay > 0:
      parts.append(optax.add_decayed_weights(oc.weight_decay))
    if oc.momentum > 0:
      parts.append(optax.trace(decay=oc.momentum))
  else:
    raise ValueError(f'unknown optim.name {oc.name!r}; choose one of {OPTIMIZERS}')
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


def ema_update(ema_params, params, decay):
  """Exponential moving average of parameters; `decay` 0 returns params."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def total_iwae_epochs(num_stages):
  return sum(3 ** i for i in range(num_stages))

