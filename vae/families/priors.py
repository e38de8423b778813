"""Priors p(z) over the top stochastic layer: the prior protocol, N(0, I), a learned mixture,
the VampPrior; the table of analytic KL divergences; the registry (a prior in a module of its
own registers itself there).

The protocol (`Prior`): a prior is a distribution over the top layer,
  log_prob(z, ctx)                  log p(z) in nats, z [..., D] -> [...]
  sample(key, n, ctx, temperature)  n draws [n, D], the noise scaled by temperature
given a `PriorContext` (the layer's size and the map from images to that layer's posterior
Gaussian, which the VampPrior is built from). A prior with parameters is a Flax module (its
parameters live under the model's 'prior'); one without is a hashable object
(`StandardNormal`). A prior with state (a cache, a memory bank) keeps it in the train state
through the hooks of `Prior` (`init_state`, `train_context`, `eval_variables`,
`state_variables`), which the step, the evaluation and `vae.load` call for every prior; their
defaults do nothing.

The priors here:
  standard  N(0, I) (`StandardNormal`): no parameters (the checkpoint tree has no 'prior').
  mog       `model.prior_components` learned Gaussians with learned weights
            (softmax of logits); means start N(0, 1), log-variances at 0.
  vamp      the VampPrior (Tomczak & Welling 2018): the uniform mixture of the
            encoder's posteriors q(z | u_k) at K learned pseudo-inputs u_k,
            parameterized as in their code: a linear map of the K x K identity
            (a [K, H, W, C] array) through a hard-tanh onto [0, 1] pixels,
            initialized N(0.05, 0.01). With an IAF posterior the components are
            the encoder's base Gaussians at the pseudo-inputs (the flow's density
            at an arbitrary z would need the flow inverted per component).
The last two are mixtures of K diagonal Gaussians (`GaussianMixturePrior`: one method,
`components(ctx)` -> (log_weights [K], means [K, D], logvars [K, D]), gives the protocol
through `mixture_log_prob` and `sample_mixture`).

KL(q || p) of a diagonal Gaussian posterior comes from `KL_TABLE` where the pair has a
closed form (`register_kl`; N(0, I) has one, per dimension); for every other prior the
objective takes the single-draw estimate log q(z | x) - log p(z) at the reconstruction's
draw (unbiased).

The priors are registered by name in `REGISTRY` (`register(name, build)`): a new one is a
class with the two methods, and a registration; `model.prior` may then name it.
"""

import dataclasses
import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae import config_lib
from vae.config_lib import check
from vae.families import objectives

_LOG_2PI = math.log(2.0 * math.pi)


def check_config(mc):
  """Checks `model.prior` and `model.prior_components`."""
  check(mc.prior in REGISTRY,
        f'model.prior={mc.prior!r} is unknown; choose one of {tuple(REGISTRY)}')
  check(mc.prior_components >= 1,
        f'model.prior_components={mc.prior_components} must be >= 1')
  CHECKS.get(mc.prior, lambda mc: None)(mc)


# Points x components scored at once by `mixture_log_prob` (64 MB of float32): more
# components are summed block by block (a prior with a component per training image).
MIXTURE_BLOCK_ELEMENTS = 1 << 24


def mixture_log_prob(z, log_weights, means, logvars, block=None):
  """log sum_k w_k N(z; mean_k, diag(exp(logvar_k))) in nats: z [..., D] -> [...].

  `log_weights` is [K] or, one mixture per example, [B, K] against z [..., B, D]. The
  squared distances are expanded into two matrix products (z^2 . 1/var and z . mean/var, at
  the highest matmul precision), so memory is [..., K] rather than [..., K, D]; above
  `block` components (default: MIXTURE_BLOCK_ELEMENTS / points) the sum runs over blocks
  of components with a running log-sum-exp.
  """
  k = means.shape[0]
  points = max(1, math.prod(z.shape[:-1]))
  block = block or max(256, MIXTURE_BLOCK_ELEMENTS // points)
  if k <= block:
    return _mixture_log_prob(z, log_weights, means, logvars)
  nb = -(-k // block)
  pad = nb * block - k
  lw = jnp.pad(log_weights, [(0, 0)] * (log_weights.ndim - 1) + [(0, pad)],
               constant_values=-jnp.inf)
  lw = jnp.moveaxis(lw.reshape(lw.shape[:-1] + (nb, block)), -2, 0)  # [nb, ..., block]
  means = jnp.pad(means, ((0, pad), (0, 0))).reshape(nb, block, -1)
  logvars = jnp.pad(logvars, ((0, pad), (0, 0))).reshape(nb, block, -1)

  def body(acc, blk):
    return jnp.logaddexp(acc, _mixture_log_prob(z, *blk)), None

  out, _ = jax.lax.scan(body, jnp.full(z.shape[:-1], -jnp.inf), (lw, means, logvars))
  return out


def _mixture_log_prob(z, log_weights, means, logvars):
  inv_var = jnp.exp(-logvars)                                        # [K, D]
  hi = jax.lax.Precision.HIGHEST
  quad = (jnp.matmul(jnp.square(z), inv_var.T, precision=hi)
          - 2.0 * jnp.matmul(z, (means * inv_var).T, precision=hi)
          + jnp.sum(jnp.square(means) * inv_var, axis=-1))           # [..., K]
  log_norm = -0.5 * (z.shape[-1] * _LOG_2PI + jnp.sum(logvars, axis=-1))  # [K]
  return jax.nn.logsumexp(log_weights + log_norm - 0.5 * quad, axis=-1)


def sample_mixture(key, n, log_weights, means, logvars, temperature=1.0):
  """n draws [n, D]: a component k ~ Categorical(w), then mean_k + temperature * sd_k * eps."""
  k_comp, k_eps = jax.random.split(key)
  idx = jax.random.categorical(k_comp, log_weights, shape=(n,))
  eps = jax.random.normal(k_eps, (n, means.shape[-1]))
  return means[idx] + temperature * jnp.exp(0.5 * logvars[idx]) * eps


@dataclasses.dataclass(frozen=True)
class PriorContext:
  """What a prior may use besides its own parameters.

  latent_dim: the top layer's size D.
  encode: images [K, H, W, C] -> (mean [K, D], logvar [K, D]) of that layer's posterior
    Gaussian under the current parameters (None where no encoder is at hand).
  """
  latent_dim: int
  encode: Optional[Callable] = None


class Prior:
  """The prior protocol (see the module docstring): `log_prob` and `sample`, and the state
  hooks with their do-nothing defaults. Subclass it (with nn.Module first for a prior with
  parameters)."""

  # Whether `train_context` and `eval_variables` need the resident training set (and the
  # batch's indices in it): such a prior cannot train on batches streamed from the host.
  needs_training_set = False
  # Whether `eval_variables` needs the prior's state from the train state (then `vae.load`
  # restores it from the checkpoint beside the parameters).
  evaluates_with_state = False

  def init_state(self, latent_dim, num_train):
    """The prior's part of the train state before the first step (a pytree; {} for none).
    `num_train`: the training examples N."""
    del latent_dim, num_train
    return {}

  def train_context(self, model, params, state, x, batch, key):
    """In a training step, before the loss: (extra variables for `model.apply`, the state
    after this batch).

    Args:
      model: the VAE (its `apply` encodes under `params`).
      params: the parameters the step differentiates.
      state: the prior's state (`init_state`'s pytree).
      x: the batch's images [B, H, W, C] in [0, 1].
      batch: with `needs_training_set`, {'ids': [B] the batch's indices in the training
        set, 'data': the resident uint8 training set, 'epoch_start': whether the step starts
        an epoch}; else None.
      key: a PRNG key of the prior's own draws at this step.
    """
    del model, params, x, batch, key
    return {}, state

  def eval_variables(self, model, params, state, train_data, num_train):
    """Extra variables for `model.apply` at evaluation under `params`; `state`: the prior's
    state (with `evaluates_with_state`; else possibly None); `train_data`: the uint8
    training set (with `needs_training_set`; else None), whose first `num_train` rows are
    the real examples (the rest pads it over devices)."""
    del model, params, state, train_data, num_train
    return {}

  def state_variables(self, state):
    """Extra variables for `model.apply` from the prior's state alone (the pictures drawn
    during training)."""
    del state
    return {}

  def log_prob(self, z, ctx):
    """log p(z) in nats: z [..., D] -> [...]."""
    raise NotImplementedError

  def sample(self, key, n, ctx, temperature=1.0):
    """n draws [n, D], each draw's noise scaled by `temperature`."""
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class StandardNormal(Prior):
  """N(0, I): analytic, no parameters."""

  def log_prob(self, z, ctx):
    del ctx
    return objectives.log_standard_normal(z)

  def sample(self, key, n, ctx, temperature=1.0):
    return temperature * jax.random.normal(key, (n, ctx.latent_dim))

  def components(self, ctx):
    """N(0, I) as a one-component mixture."""
    d = ctx.latent_dim
    return jnp.zeros((1,)), jnp.zeros((1, d)), jnp.zeros((1, d))


class GaussianMixturePrior(Prior):
  """A prior that is a mixture of diagonal Gaussians: subclasses give `components(ctx)` ->
  (log_weights [K] (or [B, K], one mixture per example), means [K, D], logvars [K, D])."""

  def components(self, ctx):
    raise NotImplementedError

  def log_prob(self, z, ctx):
    return mixture_log_prob(z, *self.components(ctx))

  def sample(self, key, n, ctx, temperature=1.0):
    return sample_mixture(key, n, *self.components(ctx), temperature=temperature)


# Closed-form KL(N(mean, exp(logvar)) || p) per latent dimension ([..., D]) for the prior
# classes that have one; `analytic_kl_per_dim` looks a prior up along its class's bases.
KL_TABLE = {}


def register_kl(prior_class, kl_per_dim):
  """Declares the closed form kl_per_dim(mean, logvar) -> [..., D] of a diagonal Gaussian
  posterior against `prior_class`'s priors (nats per dimension)."""
  KL_TABLE[prior_class] = kl_per_dim
  return kl_per_dim


def analytic_kl_per_dim(prior):
  """The closed-form per-dimension KL against `prior`, or None (then the objective takes
  the single-draw estimate log q - log p)."""
  for cls in type(prior).__mro__:
    if cls in KL_TABLE:
      return KL_TABLE[cls]
  return None


register_kl(StandardNormal, objectives.gaussian_kl_per_dim)


class MixturePrior(nn.Module, GaussianMixturePrior):
  """A learned mixture of `num_components` diagonal Gaussians (the `mog` prior)."""
  latent_dim: int
  num_components: int

  def setup(self):
    k, d = self.num_components, self.latent_dim
    self.means = self.param('means', nn.initializers.normal(1.0), (k, d))
    self.logvars = self.param('logvars', nn.initializers.zeros, (k, d))
    self.logits = self.param('logits', nn.initializers.zeros, (k,))

  def components(self, ctx=None):
    del ctx
    return jax.nn.log_softmax(self.logits), self.means, self.logvars


class VampPrior(nn.Module, GaussianMixturePrior):
  """The mixture of the encoder's posteriors at learned pseudo-inputs."""
  num_components: int
  image_shape: tuple

  def setup(self):
    init = lambda key, shape: 0.05 + 0.01 * jax.random.normal(key, shape)
    self.pseudo_inputs_raw = self.param('pseudo_inputs', init,
                                        (self.num_components,) + tuple(self.image_shape))

  def pseudo_inputs(self):
    """The K pseudo-inputs as images in [0, 1] (hard-tanh of the free parameters)."""
    return jnp.clip(self.pseudo_inputs_raw, 0.0, 1.0)

  def components(self, ctx):
    """The encoder's posteriors at the pseudo-inputs (`ctx.encode`)."""
    means, logvars = ctx.encode(self.pseudo_inputs())
    k = self.num_components
    return jnp.full((k,), -math.log(k)), means, logvars


@dataclasses.dataclass(frozen=True)
class PriorMemory:
  """What a prior adds to a run's memory, in floats (vae/training/memory.py sums it).

  per_example: floats per example and posterior sample (its densities at each draw).
  training: floats of one training step beyond the batch's (kept for the backward pass).
  evaluation: floats of one evaluation batch beyond the batch's.
  state: floats kept between steps (a cache in the train state).
  why: the fields behind them, for the error line.
  """
  per_example: int = 0
  training: int = 0
  evaluation: int = 0
  state: int = 0
  why: str = ''


def _no_memory(mc, tc, floats_per_example, num_train):
  del mc, tc, floats_per_example, num_train
  return PriorMemory()


def _mixture_memory(mc, tc, floats_per_example, num_train):
  del tc, floats_per_example, num_train
  k = mc.prior_components
  return PriorMemory(per_example=2 * k, why=f'model.prior_components={k} components')


def _vamp_memory(mc, tc, floats_per_example, num_train):
  """The encoder's pass over the K pseudo-inputs, at every step and evaluation batch."""
  del tc, num_train
  k = mc.prior_components
  return PriorMemory(per_example=2 * k, training=k * floats_per_example,
                     evaluation=k * floats_per_example,
                     why=f'model.prior_components={k} pseudo-inputs')


REGISTRY = {}
MEMORY = {}
CHECKS = {}


def register(name, build, memory=_no_memory, check_config=None, fields=()):
  """Makes `build(model_config, image_shape)` available as model.prior=name: it returns the
  prior of the top layer, an object with the protocol of `Prior` (a Flax module when it has
  parameters). `memory(model_config, train_config, floats_per_example, num_train)` ->
  `PriorMemory` declares what it adds to the memory estimate (default: nothing);
  `check_config(model_config)` raises ConfigError for the prior's own fields; `fields`,
  `config_lib.Field`s named 'model.<field>', are the prior's own config fields."""
  config_lib.declare(*fields)
  REGISTRY[name] = build
  MEMORY[name] = memory
  if check_config is not None:
    CHECKS[name] = check_config
  return build


def memory(mc, tc, floats_per_example, num_train):
  """The `PriorMemory` of `config.model`'s prior."""
  return MEMORY.get(mc.prior, _no_memory)(mc, tc, floats_per_example, num_train)


register('standard', lambda mc, image_shape: StandardNormal())
register('mog', lambda mc, image_shape: MixturePrior(mc.latent_dim, mc.prior_components),
         _mixture_memory)
register('vamp', lambda mc, image_shape: VampPrior(mc.prior_components, tuple(image_shape)),
         _vamp_memory)


def build_prior(mc, image_shape):
  """The prior of `config.model` (on z2 when there are two stochastic layers)."""
  return REGISTRY[mc.prior](mc, image_shape)
