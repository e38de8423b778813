"""Priors p(z) over the top stochastic layer: N(0, I), a learned mixture, the VampPrior, the
Exemplar prior; the prior protocol they share; the table of analytic KL divergences.

The protocol (`Prior`): a prior is a distribution over the top layer,
  log_prob(z, ctx)                  log p(z) in nats, z [..., D] -> [...]
  sample(key, n, ctx, temperature)  n draws [n, D], the noise scaled by temperature
given a `PriorContext` (the layer's size and the map from images to that layer's posterior
Gaussian, which the VampPrior and the Exemplar prior are built from). A prior with
parameters is a Flax module (its parameters live under the model's 'prior'); one without is
any hashable object with those two methods (`StandardNormal`). The model calls nothing else.

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
  exemplar  the Exemplar VAE's prior (Norouzi, Fleet & Norouzi 2020): the uniform mixture
            of N(mu(x_n), sigma^2 I) over the encoder's means of the N training exemplars,
            sigma^2 learned; trained with leave-one-out and retrieval of each example's
            nearest exemplars (`retrieve`), evaluated with all N (`ExemplarPrior`).
The last three are mixtures of K diagonal Gaussians (`GaussianMixturePrior`: one method,
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

from vae.config_lib import check
from vae.families import objectives

_LOG_2PI = math.log(2.0 * math.pi)


def check_config(mc):
  """Checks `model.prior` and `model.prior_components`."""
  check(mc.prior in REGISTRY,
        f'model.prior={mc.prior!r} is unknown; choose one of {tuple(REGISTRY)}')
  check(mc.prior_components >= 1,
        f'model.prior_components={mc.prior_components} must be >= 1')
  check(mc.exemplar_k >= 1, f'model.exemplar_k={mc.exemplar_k} must be >= 1')
  check(mc.exemplar_candidates >= 0,
        f'model.exemplar_candidates={mc.exemplar_candidates} must be >= 0 (0: all)')
  need = mc.exemplar_k + (1 if mc.exemplar_leave_one_out else 0)
  check(mc.prior != 'exemplar' or mc.exemplar_candidates == 0
        or mc.exemplar_candidates >= need,
        f'model.exemplar_candidates={mc.exemplar_candidates} is below the {need} exemplars '
        f'retrieved per example (model.exemplar_k={mc.exemplar_k}'
        + (' + 1 left out' if mc.exemplar_leave_one_out else '') + f'); raise it to >= {need} '
        'or set 0 (all)')
  check(mc.prior != 'exemplar' or mc.posterior == 'diagonal',
        'model.prior=exemplar centres its components at the posterior means of a diagonal '
        'posterior; set model.posterior=diagonal')


# Points x components scored at once by `mixture_log_prob` (64 MB of float32): more
# components are summed block by block (the Exemplar prior's 50,000 at evaluation).
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
  """The prior protocol (see the module docstring): `log_prob` and `sample`. Subclass it
  (with nn.Module first for a prior with parameters) or write the two methods."""

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


class ExemplarPrior(nn.Module, GaussianMixturePrior):
  """The Exemplar VAE's prior (Norouzi, Fleet & Norouzi 2020): the uniform mixture of
  Gaussians N(mu(x_n), sigma^2 I) centred at the encoder's means of training exemplars x_n,
  with one learned log-variance log sigma^2 shared by every component and dimension
  (initialized at 0; the reference code draws it from N(0, 1)).

  Its exemplars come with each call, in the 'exemplars' collection (`exemplar_variables`):
  'images' [U, H, W, C] (training: encoded here through `encode`, so gradients reach the
  encoder through the prior) or 'means' [U, D] (evaluation and sampling: the means of all N
  training exemplars, computed once), and optionally 'log_weights' [U] or [B, U] (one row per
  example: retrieval and leave-one-out, `retrieve`; default uniform). Without exemplars
  (initialization) it is N(0, sigma^2 I).
  """
  latent_dim: int

  def setup(self):
    self.log_variance = self.param('log_variance', nn.initializers.zeros, ())

  def components(self, ctx):
    if self.has_variable('exemplars', 'means'):
      means = self.get_variable('exemplars', 'means')
    elif self.has_variable('exemplars', 'images'):
      means = ctx.encode(self.get_variable('exemplars', 'images'))[0]
    else:
      means = jnp.zeros((1, self.latent_dim))
    k = means.shape[0]
    log_weights = (self.get_variable('exemplars', 'log_weights')
                   if self.has_variable('exemplars', 'log_weights')
                   else jnp.full((k,), -math.log(k)))
    return log_weights, means, jnp.broadcast_to(self.log_variance, means.shape)

  def sample_near(self, key, centres, n, temperature=1.0):
    """n draws per centre [M, D] from its component: centre + temperature sigma eps,
    [n, M, D]."""
    eps = jax.random.normal(key, (n,) + centres.shape)
    return centres + temperature * jnp.exp(0.5 * self.log_variance) * eps


def exemplar_variables(means=None, images=None, log_weights=None):
  """The 'exemplars' collection of a VAE whose prior is an ExemplarPrior (its module is named
  'prior'): merge it into the variables of `model.apply`."""
  found = {'means': means, 'images': images, 'log_weights': log_weights}
  return {'exemplars': {'prior': {k: v for k, v in found.items() if v is not None}}}


def retrieve(key, cache, batch_means, batch_ids, num_candidates, k, leave_one_out=True):
  """The exemplars of a training batch's prior (the Exemplar VAE's approximate prior).

  For each example, the k exemplars whose cached means lie nearest its posterior mean, among
  `num_candidates` exemplars drawn at random with replacement (all N, in order, when
  num_candidates is 0 or >= N). The batch's mixture is then uniform over the distinct
  retrieved exemplars (one retrieved twice counts once), with leave-one-out removing each
  example's own exemplar from its mixture.

  Args:
    key: PRNG key of the candidate draw.
    cache: [N, D] exemplar means (refreshed every epoch during training).
    batch_means: [B, D] the batch's posterior means (no gradient needed).
    batch_ids: [B] int, each example's index among the N exemplars.
    num_candidates: candidates per step (0: all).
    k: nearest exemplars per example.
    leave_one_out: drop each example's own exemplar from its mixture.
  Returns:
    (ids [B * k'] int32, log_weights [B, B * k']) with k' = min(k, candidates): the exemplars
    to encode and each example's mixture log-weights (-inf for a duplicate or the left-out
    exemplar; the rest -log of their count).
  """
  n = cache.shape[0]
  if num_candidates <= 0 or num_candidates >= n:
    pool = jnp.arange(n, dtype=jnp.int32)
  else:
    pool = jax.random.randint(key, (num_candidates,), 0, n, dtype=jnp.int32)
  cand = cache[pool]                                                   # [P, D]
  d2 = (jnp.sum(jnp.square(batch_means), -1, keepdims=True) - 2.0 * batch_means @ cand.T
        + jnp.sum(jnp.square(cand), -1)[None])                        # [B, P]
  _, pos = jax.lax.top_k(-d2, min(k, pool.shape[0]))                  # [B, k']
  ids = pool[pos].reshape(-1)                                          # [B k']
  order = jnp.argsort(ids)
  sorted_ids = ids[order]
  first_sorted = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  first = jnp.zeros_like(first_sorted).at[order].set(first_sorted)    # one of each id
  valid = jnp.broadcast_to(first[None, :], (batch_ids.shape[0], ids.shape[0]))
  if leave_one_out:
    valid = valid & (ids[None, :] != batch_ids[:, None])
  count = jnp.maximum(jnp.sum(valid, axis=1), 1).astype(jnp.float32)
  return ids, jnp.where(valid, -jnp.log(count)[:, None], -jnp.inf)


def uses_exemplars(model):
  """Whether a VAE's prior is the Exemplar prior (its training step needs the batch's
  indices and the training set, its state holds the cache of exemplar means, and evaluation
  and sampling need the means of all training exemplars)."""
  return isinstance(getattr(model, 'prior', None), ExemplarPrior)


def exemplar_means(model, params, data, num_exemplars):
  """The top layer's posterior means [N, D] (`VAE.top_mean`) of the first N images of the
  uint8 training set `data`, its pixels scaled to [0, 1] (how exemplars are encoded, as in
  the reference code: grey levels, not a binarization)."""
  encode = lambda images: model.apply({'params': params}, images.astype(jnp.float32) / 255.0,
                                      method=model.top_mean)
  return encode_exemplars(encode, data, num_exemplars)


def encode_exemplars(encode, data, num_exemplars, block=500):
  """encode(images [b, H, W, C] uint8) -> means [b, D] over the first `num_exemplars` rows
  of `data`, `block` rows at a time (memory bounded by one block): [N, D]."""
  n_rows = data.shape[0]
  nb = -(-n_rows // block)
  padded = jnp.pad(data, [(0, nb * block - n_rows)] + [(0, 0)] * (data.ndim - 1))
  means = jax.lax.map(encode, padded.reshape((nb, block) + data.shape[1:]))
  return means.reshape(nb * block, -1)[:num_exemplars]


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


def _exemplar_memory(mc, tc, floats_per_example, num_train):
  """The cache of N exemplar means (train state); per step the distances to the candidates
  and the encoder's pass over the batch's retrieved exemplars; at evaluation all N means and
  the blocked mixture sum (at most MIXTURE_BLOCK_ELEMENTS at once)."""
  n, d, b = num_train, mc.latent_dim, tc.batch_size
  candidates = n if mc.exemplar_candidates <= 0 else min(mc.exemplar_candidates, n)
  retrieved = b * min(mc.exemplar_k, candidates)
  return PriorMemory(
      per_example=2 * retrieved, training=b * candidates + retrieved * floats_per_example,
      evaluation=n * d + MIXTURE_BLOCK_ELEMENTS, state=n * d,
      why=(f'{n:,} training exemplars x model.latent_dim={d}, model.exemplar_candidates='
           f'{mc.exemplar_candidates}, model.exemplar_k={mc.exemplar_k}'))


REGISTRY = {}
MEMORY = {}


def register(name, build, memory=_no_memory):
  """Makes `build(model_config, image_shape)` available as model.prior=name: it returns the
  prior of the top layer, an object with the protocol of `Prior` (a Flax module when it has
  parameters). `memory(model_config, train_config, floats_per_example, num_train)` ->
  `PriorMemory` declares what it adds to the memory estimate (default: nothing)."""
  REGISTRY[name] = build
  MEMORY[name] = memory
  return build


def memory(mc, tc, floats_per_example, num_train):
  """The `PriorMemory` of `config.model`'s prior."""
  return MEMORY.get(mc.prior, _no_memory)(mc, tc, floats_per_example, num_train)


register('standard', lambda mc, image_shape: StandardNormal())
register('mog', lambda mc, image_shape: MixturePrior(mc.latent_dim, mc.prior_components),
         _mixture_memory)
register('vamp', lambda mc, image_shape: VampPrior(mc.prior_components, tuple(image_shape)),
         _vamp_memory)
register('exemplar', lambda mc, image_shape: ExemplarPrior(mc.latent_dim), _exemplar_memory)


def build_prior(mc, image_shape):
  """The prior of `config.model` (on z2 when there are two stochastic layers)."""
  return REGISTRY[mc.prior](mc, image_shape)
