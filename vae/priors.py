"""Priors p(z) over the top stochastic layer: N(0, I), a learned mixture, the VampPrior.

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


def mixture_log_prob(z, log_weights, means, logvars):
  """log sum_k w_k N(z; mean_k, diag(exp(logvar_k))) in nats: z [..., D] -> [...].

  The squared distances are expanded into two matrix products (z^2 . 1/var and
  z . mean/var, at the highest matmul precision), so memory is [..., K] rather
  than [..., K, D]: the importance sampler scores [S, B] points against 500
  components.
  """
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


def build_prior(mc, image_shape):
  """The prior module of `config.model` (on z2 when there are two stochastic layers); None
  for N(0, I), which `VAE` handles analytically and which has no parameters."""
  return REGISTRY[mc.prior](mc, image_shape)
