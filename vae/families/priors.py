"""Priors p(z) over the top stochastic layer: N(0, I), a learned mixture, the VampPrior, the
Exemplar prior.

Every prior here is a mixture of K diagonal Gaussians, described by
`components()` -> (log_weights [K], means [K, D], logvars [K, D]):
  standard  K = 1, N(0, I): no module and no parameters (`VAE.prior` is None and the
            checkpoint tree is unchanged).
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
`mixture_log_prob` scores z in nats; `sample_mixture` draws from it.

The priors are registered by name in `REGISTRY` (`register(name, build)`): a new one is a
Flax module with `components(encode)` plus a registration; `model.prior` may then name it.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae.config_lib import check

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


class MixturePrior(nn.Module):
  """A learned mixture of `num_components` diagonal Gaussians (the `mog` prior)."""
  latent_dim: int
  num_components: int

  def setup(self):
    k, d = self.num_components, self.latent_dim
    self.means = self.param('means', nn.initializers.normal(1.0), (k, d))
    self.logvars = self.param('logvars', nn.initializers.zeros, (k, d))
    self.logits = self.param('logits', nn.initializers.zeros, (k,))

  def components(self, encode=None):
    del encode
    return jax.nn.log_softmax(self.logits), self.means, self.logvars


class VampPrior(nn.Module):
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

  def components(self, encode):
    """`encode` maps images [K, H, W, C] to the (mean, logvar) of q(z | u) on this layer."""
    means, logvars = encode(self.pseudo_inputs())
    k = self.num_components
    return jnp.full((k,), -math.log(k)), means, logvars


class ExemplarPrior(nn.Module):
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

  def components(self, encode):
    if self.has_variable('exemplars', 'means'):
      means = self.get_variable('exemplars', 'means')
    elif self.has_variable('exemplars', 'images'):
      means = encode(self.get_variable('exemplars', 'images'))[0]
    else:
      means = jnp.zeros((1, self.latent_dim))
    k = means.shape[0]
    log_weights = (self.get_variable('exemplars', 'log_weights')
                   if self.has_variable('exemplars', 'log_weights')
                   else jnp.full((k,), -math.log(k)))
    return log_weights, means, jnp.broadcast_to(self.log_variance, means.shape)


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


REGISTRY = {}


def register(name, build):
  """Makes `build(model_config, image_shape)` available as model.prior=name: it returns a
  Flax module whose `components(encode)` gives (log_weights [K], means [K, D], logvars
  [K, D]) of the mixture on the top layer, where `encode` maps images to that layer's
  posterior (mean, logvar) (the VampPrior uses it), or None for N(0, I)."""
  REGISTRY[name] = build
  return build


register('standard', lambda mc, image_shape: None)  # N(0, I): analytic, no parameters
register('mog', lambda mc, image_shape: MixturePrior(mc.latent_dim, mc.prior_components))
register('vamp', lambda mc, image_shape: VampPrior(mc.prior_components, tuple(image_shape)))
register('exemplar', lambda mc, image_shape: ExemplarPrior(mc.latent_dim))


def build_prior(mc, image_shape):
  """The prior module of `config.model` (on z2 when there are two stochastic layers); None
  for N(0, I), which `VAE` handles analytically and which has no parameters."""
  return REGISTRY[mc.prior](mc, image_shape)
