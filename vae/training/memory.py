"""Whether a training run fits in memory, checked before anything compiles.

`check_fits(config, image_shape, num_models)` estimates from the config alone the bytes a
run needs on one device: the parameters with their gradients, the optimizer's two moments
and an EMA; the training step's activations (batch x samples, kept for the backward pass);
an evaluation batch; the decoded picture samples. A run whose estimate exceeds the memory
of its device (on the CPU: the machine's physical memory) is refused with one line that
names the field behind the largest part and the memory it would need. The estimate is
within a small factor of what XLA allocates; its job is to turn an absurd size (a latent
size of 1e9, a hidden width of 1e8, 1e8 mixture components) into an error line instead of
a C++ abort or the kernel killing the process, not to budget memory exactly.
"""

import math
import os

import jax
import jax.numpy as jnp

from vae import config_lib
from vae.families import models, priors

FLOAT_BYTES = 4
GIB = 2.0 ** 30


def device_memory_bytes():
  """Memory of the first local device: its allocator's limit on an accelerator, the
  machine's physical memory on the CPU."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (a backend without memory stats)
    stats = {}
  if stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def parameter_count(model_config, image_shape):
  """The model's parameters, from their shapes (nothing is allocated)."""
  model = models.build_model(model_config, image_shape)
  shapes = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros((1,) + tuple(image_shape)), key)['params'],
      jax.random.key(0))
  return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def estimate(config, image_shape, num_models=1, num_train=0):
  """{part: (bytes, the fields behind it)} of a training run on one device (`num_train`:
  the training examples, which a prior's state may scale with)."""
  mc, t = config.model, config.train
  params = parameter_count(mc, image_shape)
  copies = 4 + (1 if config.optim.ema_decay > 0 else 0)  # params, grads, two moments, EMA
  terms = models.activation_floats(mc, image_shape)
  prior = priors.memory(mc, t, sum(terms.values()), num_train)  # the prior's declaration
  if prior.per_example:
    terms['the prior'] = prior.per_example
  acts = sum(terms.values())
  field = max(terms, key=terms.get)
  value = {'model.hidden': tuple(mc.hidden), 'model.conv_channels': tuple(mc.conv_channels),
           'model.latent_dim': mc.latent_dim}
  each = (f'{acts:,} floats per example'
          + (f', mostly from {field}={value[field]}' if field in value else '')
          + (f', mostly from the prior\'s {prior.why}' if field == 'the prior' else ''))
  and_prior = lambda floats: f', and the prior\'s {prior.why}' if floats else ''
  k = int(config.objective.num_samples)
  eval_k = max(1, min(int(t.eval_iw_samples), 100))  # importance samples go in chunks of 100
  parts = {
      'parameters': (FLOAT_BYTES * params * copies,
                     f'{params:,} parameters (model.hidden={tuple(mc.hidden)}, '
                     f'model.latent_dim={mc.latent_dim}{and_prior(prior.why)})'),
      'training activations': (FLOAT_BYTES * 3 * (t.batch_size * k * acts + prior.training),
                               f'train.batch_size={t.batch_size} x objective.num_samples={k}'
                               f' x {each}{and_prior(prior.training)}'),
      'evaluation': (FLOAT_BYTES * (t.eval_batch_size * eval_k * acts + prior.evaluation),
                     f'train.eval_batch_size={t.eval_batch_size}'
                     + (f' x train.eval_iw_samples chunks of {eval_k}' if eval_k > 1 else '')
                     + f' x {each}{and_prior(prior.evaluation)}'),
      'picture samples': (FLOAT_BYTES * t.num_image_samples * acts,
                          f'train.num_image_samples={t.num_image_samples} x {each}'),
  }
  if prior.state:
    parts['the prior\'s state'] = (FLOAT_BYTES * prior.state, prior.why)
  return {name: (num_models * b, why) for name, (b, why) in parts.items()}


def check_draws(count, floats_per_draw, what, lower):
  """Raises ConfigError (a ValueError), before any work, when `count` draws of
  `floats_per_draw` each exceed the device's memory: '`what` need about X GiB, ...; `lower`
  (at most N draws at once)'."""
  need, have = FLOAT_BYTES * floats_per_draw * count, device_memory_bytes()
  if need > have:
    fits = max(1, have // (FLOAT_BYTES * floats_per_draw))
    raise config_lib.ConfigError(f'{what} need about {need / GIB:,.1f} GiB, more than the '
                                 f'{have / GIB:,.1f} GiB of this device; {lower} (at most '
                                 f'{fits:,} draws at once)')


def floats_per_example(model_config, image_shape):
  """The floats one example and one posterior sample hold in a forward pass (the sum of
  `activation_floats`)."""
  return sum(models.activation_floats(model_config, image_shape).values())


def check_fits(config, image_shape, num_models=1, available=None, num_train=0):
  """Raises ConfigError, one line naming the field and the memory it would need, when the
  estimate exceeds the device's memory (`available` bytes; default: `device_memory_bytes`)."""
  parts = estimate(config, image_shape, num_models, num_train)
  total = sum(b for b, _ in parts.values())
  available = device_memory_bytes() if available is None else available
  if total <= available:
    return parts
  name, (most, why) = max(parts.items(), key=lambda kv: kv[1][0])
  members = f' for {num_models} members' if num_models > 1 else ''
  raise config_lib.ConfigError(
      f'this run needs about {total / GIB:,.1f} GiB{members}, more than the '
      f'{available / GIB:,.1f} GiB of {jax.local_devices()[0].platform} memory; most of it '
      f'({most / GIB:,.1f} GiB) is {name}: {why}; make that smaller')
