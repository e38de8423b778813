"""Observation models p(x | z): per-pixel log densities and the `Likelihood` wrapper.

Every `*_log_prob` function here returns per-pixel log probabilities in nats with
the shape of `x`; `Likelihood.log_prob` sums them over the image axes
[H, W, C], giving log p(x | z) in nats per example. `Likelihood.mean` gives the
picture to look at (a mean in [0, 1]), never logits.

Pixel conventions: `x` is float in [0, 1]. For the Bernoulli and continuous
Bernoulli it is binary or a grey level; for the discretized logistic it is
k / 255 for an 8-bit value k.

Every observation model is a `Family` in `REGISTRY`: a new one is one subclass (its
decoder parameters, per-pixel log density and mean image) plus
`register(family, pixels)`, where `pixels` is the data protocol it scores ('binary',
'continuous' or '8bit', `config_lib.PIXEL_PROTOCOLS`). `model.likelihood` may then name it.
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

from vae import config_lib
from vae.config_lib import check

IMAGE_AXES = (-3, -2, -1)
GAUSSIAN_SCALES = ('fixed', 'global', 'pixel')
BERNOULLI_IMPLS = ('fused', 'autodiff')


def check_config(mc, dc):
  """Checks `config.model`'s likelihood fields, and that the data protocol suits them."""
  check(mc.likelihood in REGISTRY,
        f'model.likelihood={mc.likelihood!r} is unknown; choose one of {tuple(REGISTRY)}')
  check(mc.gaussian_scale in GAUSSIAN_SCALES,
        f'model.gaussian_scale={mc.gaussian_scale!r}; choose one of {GAUSSIAN_SCALES}')
  check(mc.gaussian_fixed_scale > 0, 'model.gaussian_fixed_scale must be > 0')
  check(mc.bernoulli_impl in BERNOULLI_IMPLS,
        f'model.bernoulli_impl={mc.bernoulli_impl!r}; choose one of {BERNOULLI_IMPLS}')
  if config_lib.pixel_protocol(mc.likelihood) == '8bit':
    check(dc.binarize == 'none' and not dc.dequantize,
          f'model.likelihood={mc.likelihood} scores 8-bit pixel values; set '
          'data.binarize=none and data.dequantize=False')


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def bernoulli_log_prob(logits, x, impl='fused'):
  """log Bern(x; sigmoid(logits)) = x * l - softplus(l) per pixel; finite for any logit.
  `impl`: how the softplus's derivative is computed, 'fused' (`softplus`) or 'autodiff'
  (jax.nn.softplus's); the values are the same."""
  return x * logits - (softplus if impl == 'fused' else jax.nn.softplus)(logits)


@jax.custom_jvp
def softplus(l):
  """jax.nn.softplus(l) = log(1 + e^l), the same values; its derivative sigmoid(l) is
  computed from the forward's exp(-|l|) (one exp per element for both, where autodiff of
  jax.nn.softplus takes a second one, exp(l - softplus(l)); the two derivatives differ by
  float32 rounding)."""
  return jax.nn.softplus(l)


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (l,), (t,) = primals, tangents
  e = jnp.exp(-jnp.abs(l))
  out = jnp.where(jnp.isnan(l), l, jnp.maximum(l, 0.0) + jnp.log1p(e))
  return out, t * (jnp.where(l >= 0, 1.0, e) / (1.0 + e))


LOG_GROUP_PIXELS = 16


def _flat(v):
  return v.reshape(v.shape[:-3] + (-1,))


def _grouped_sum(logits, x, e, group):
  """sum of x l - max(l, 0) - log(1 + e) over the last axis, one log per `group` factors."""
  factor = 1.0 + e
  pad = -factor.shape[-1] % group
  if pad:  # a factor of 1 contributes nothing
    factor = jnp.concatenate([factor, jnp.ones(factor.shape[:-1] + (pad,), factor.dtype)], -1)
  products = jnp.prod(factor.reshape(factor.shape[:-1] + (-1, group)), axis=-1)
  return (jnp.sum(x * logits - jnp.maximum(logits, 0.0), axis=-1)
          - jnp.sum(jnp.log(products), axis=-1))


def bernoulli_log_prob_sum(logits, x, group=LOG_GROUP_PIXELS):
  """sum over [H, W, C] of `bernoulli_log_prob`, with one log per `group` pixels.

  x l - softplus(l) = (x l - max(l, 0)) - log(1 + e^-|l|), and a sum of logs is the log of
  a product: each factor lies in (1, 2], so a product of 16 cannot overflow, and its
  float32 rounding (a relative 2^-24 per factor) is of the order of the float32 sum's own.
  One exp per pixel and one log per group instead of an exp and a log1p per pixel, one
  fused pass, for binary and grey pixels alike; x l - max(l, 0) is exact for binary x at any
  logit (no l - softplus(l) cancellation). [..., H, W, C] -> [...] nats per example.
  The importance-sampling estimator scores with it; `bernoulli_log_prob_sum_fused` is the
  same value with a derivative for training.
  """
  logits, x = _flat(logits), _flat(jnp.broadcast_to(x, logits.shape))
  return _grouped_sum(logits, x, jnp.exp(-jnp.abs(logits)), group)


@jax.custom_vjp
def _fused_sum(logits, x):
  return bernoulli_log_prob_sum(logits, x)


def _fused_sum_fwd(logits, x):
  flat_l, flat_x = _flat(logits), _flat(x)
  e = jnp.exp(-jnp.abs(flat_l))
  value = _grouped_sum(flat_l, flat_x, e, LOG_GROUP_PIXELS)
  # d/dl = x - sigmoid(l), the sigmoid from the same exp: e / (1 + e) below 0, 1 / (1 + e) above.
  grad_l = flat_x - jnp.where(flat_l >= 0, 1.0, e) / (1.0 + e)
  return value, (grad_l.reshape(logits.shape), logits)


def _fused_sum_bwd(residuals, cotangent):
  grad_l, logits = residuals
  ct = cotangent[..., None, None, None]
  return ct * grad_l, ct * logits


_fused_sum.defvjp(_fused_sum_fwd, _fused_sum_bwd)


def bernoulli_log_prob_sum_fused(logits, x):
  """`bernoulli_log_prob_sum` (the same values) with its derivative x - sigmoid(l) from the
  forward pass's exp(-|l|), as a custom VJP: forward and backward of the Bernoulli
  log-likelihood in one pass, one exp per pixel and one log per 16 pixels, where autodiff
  of the per-pixel sum takes two exps and a log1p per pixel (model.bernoulli_impl=fused:
  on two CPU cores the tiny model's step is ~25% faster, docs/benchmarks.md). The derivative
  equals autodiff's within float32 rounding. [..., H, W, C] -> [...] nats per example."""
  return _fused_sum(logits, jnp.broadcast_to(x, logits.shape).astype(logits.dtype))


def gaussian_log_prob(loc, log_scale, x):
  """log N(x; loc, exp(log_scale)^2)."""
  z = (x - loc) * jnp.exp(-log_scale)
  return -0.5 * z * z - log_scale - _HALF_LOG_2PI


def continuous_bernoulli_log_norm(logits):
  """log C(lambda) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019).

  With lambda = sigmoid(l): C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)
  = l / tanh(l / 2). Near l = 0 (lambda = 0.5) the ratio is 0/0, so a Taylor
  expansion of log(u / tanh u), u = l / 2, is used: u^2/3 - 7 u^4 / 90.
  """
  u = 0.5 * logits
  small = jnp.abs(u) < 1e-2
  u_safe = jnp.where(small, 1.0, u)
  exact = jnp.log(jnp.abs(u_safe)) - jnp.log(jnp.abs(jnp.tanh(u_safe)))
  u2 = u * u
  taylor = u2 / 3.0 - 7.0 * u2 * u2 / 90.0
  return math.log(2.0) + jnp.where(small, taylor, exact)


def continuous_bernoulli_log_prob(logits, x, impl='fused'):
  """log CB(x; lambda) = x log lambda + (1 - x) log(1 - lambda) + log C(lambda)."""
  return bernoulli_log_prob(logits, x, impl) + continuous_bernoulli_log_norm(logits)


def continuous_bernoulli_mean(logits):
  """E[x] = lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)) = sigmoid(l)/tanh(l/2) - 1/l."""
  small = jnp.abs(logits) < 1e-2
  l_safe = jnp.where(small, 1.0, logits)
  exact = jax.nn.sigmoid(l_safe) / jnp.tanh(0.5 * l_safe) - 1.0 / l_safe
  return jnp.where(small, 0.5 + logits / 12.0, exact)


def discretized_logistic_log_prob(loc, log_scale, x, num_bins=256):
  """Log mass of the bin holding x under a logistic discretized to `num_bins` levels.

  As in PixelCNN++ (Salimans et al. 2017) with one mixture component: x and
  loc live on [-1, 1] after the map x -> 2x - 1, bins have width 2 / (num_bins
  - 1), and the two edge bins take the tails to -inf and +inf, so the masses
  over all levels sum to 1.
  """
  x = 2.0 * x - 1.0
  half_bin = 1.0 / (num_bins - 1)
  inv_s = jnp.exp(-log_scale)
  plus = inv_s * (x - loc + half_bin)
  minus = inv_s * (x - loc - half_bin)
  log_cdf_plus = -jax.nn.softplus(-plus)        # log sigmoid(plus), used at x = -1
  log_one_minus_cdf_minus = -jax.nn.softplus(minus)  # log(1 - sigmoid(minus)), x = 1
  # Interior bins: sigmoid(hi) - sigmoid(lo) = sigmoid(hi) (1 - exp(log sig(lo) - log sig(hi))).
  # Above the mode the mirrored form sigmoid(-minus) - sigmoid(-plus) is used, so
  # both tails are computed from small numbers rather than differences near 1.
  upper = x > loc
  hi = jnp.where(upper, -minus, plus)
  lo = jnp.where(upper, -plus, minus)
  log_sig_hi = -jax.nn.softplus(-hi)
  diff = jnp.minimum(-jax.nn.softplus(-lo) - log_sig_hi, -1e-12)
  log_mid = log_sig_hi + jnp.log(-jnp.expm1(diff))
  # Where the bin is narrow next to the scale, so that the difference of the
  # two log CDFs underflows, use the density at the bin centre times the width.
  centre = inv_s * (x - loc)
  log_pdf_mid = centre - log_scale - 2.0 * jax.nn.softplus(centre)
  log_mid = jnp.where(diff > -1e-5, log_pdf_mid + math.log(2.0 * half_bin), log_mid)
  eps = 1e-3
  return jnp.where(x < -1.0 + eps, log_cdf_plus,
                   jnp.where(x > 1.0 - eps, log_one_minus_cdf_minus, log_mid))


def bits_per_dim(nats_per_example, num_dims, offset=0.0):
  """Bits per dimension of a negative log-likelihood in nats per example: nats / (D ln 2)
  + `offset` (`bpd_offset`: 0 for discrete pixels, 8 for a density on dequantized ones);
  None when `offset` is None (a density on pixels that were not dequantized has none)."""
  if offset is None:
    return None
  return nats_per_example / (num_dims * math.log(2.0)) + offset


# Why a likelihood's bits/dim may be missing, for the reports that leave it out.
NO_BPD = 'no bits/dim: a density on continuous pixels without data.dequantize'


def bpd_offset(likelihood, dequantize):
  """The bits/dim protocol of a registered likelihood's pixels: 0.0 for binary pixels and
  8-bit values (-log2 p / D of a discrete distribution); 8.0 for a density on dequantized
  pixels x = (k + u) / 256 (the density on [0, 1]^D bounds the probability of the 8-bit
  values k by -log2 P(k) <= -log2 p(x) + 8 D); None for a density on pixels that were not
  dequantized (no discrete probability to report)."""
  if config_lib.pixel_protocol(likelihood) in ('binary', '8bit'):
    return 0.0
  return 8.0 if dequantize else None


class Family:
  """An observation model p(x | z), registered under `name` (`register`).

  Methods take the `Likelihood` (its options: gaussian_scale, fixed_scale, min_log_scale,
  bernoulli_impl) first. A family overrides `log_prob_per_pixel` and `mean`; `params`
  (decoder output -> named parameters), `learned_scale_shape` (a free learned scale
  parameter) and `log_prob` (the sum over image axes) have defaults.
  """
  name = None
  params_per_channel = 1  # decoder output channels per image channel

  def learned_scale_shape(self, lik, image_shape):  # pylint: disable=unused-argument
    return None

  def params(self, lik, raw, learned_log_scale):  # pylint: disable=unused-argument
    return {'logits': raw}

  def log_prob_per_pixel(self, lik, params, x):
    raise NotImplementedError

  def log_prob(self, lik, params, x, grouped_logs):  # pylint: disable=unused-argument
    return jnp.sum(self.log_prob_per_pixel(lik, params, x), axis=IMAGE_AXES)

  def mean(self, lik, params):
    raise NotImplementedError


REGISTRY = {}


def register(family, pixels):
  """Makes `family` (a Family instance) available as model.likelihood=family.name, scoring
  pixels of the protocol `pixels` ('binary', 'continuous' or '8bit')."""
  config_lib.register_pixel_protocol(family.name, pixels)
  REGISTRY[family.name] = family
  return family


class Bernoulli(Family):
  """Binary (or grey) pixels with p = sigmoid(logits)."""
  name = 'bernoulli'

  def log_prob_per_pixel(self, lik, params, x):
    return bernoulli_log_prob(params['logits'], x, lik.bernoulli_impl)

  def log_prob(self, lik, params, x, grouped_logs):
    if lik.bernoulli_impl == 'fused':
      return bernoulli_log_prob_sum_fused(params['logits'], x)
    if grouped_logs:
      return bernoulli_log_prob_sum(params['logits'], x)
    return super().log_prob(lik, params, x, grouped_logs)

  def mean(self, lik, params):
    return jax.nn.sigmoid(params['logits'])


class ContinuousBernoulli(Family):
  """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on grey levels."""
  name = 'continuous_bernoulli'

  def log_prob_per_pixel(self, lik, params, x):
    return continuous_bernoulli_log_prob(params['logits'], x, lik.bernoulli_impl)

  def mean(self, lik, params):
    return continuous_bernoulli_mean(params['logits'])


class Gaussian(Family):
  """N(x; loc, scale^2) per pixel; the scale fixed, one learned scalar or learned per pixel."""
  name = 'gaussian'

  def learned_scale_shape(self, lik, image_shape):
    if lik.gaussian_scale == 'fixed':
      return None
    return () if lik.gaussian_scale == 'global' else tuple(image_shape)

  def params(self, lik, raw, learned_log_scale):
    if learned_log_scale is None:
      log_scale = jnp.full_like(raw, math.log(lik.fixed_scale))
    else:
      log_scale = jnp.broadcast_to(jnp.maximum(learned_log_scale, lik.min_log_scale), raw.shape)
    return {'loc': raw, 'log_scale': log_scale}

  def log_prob_per_pixel(self, lik, params, x):
    return gaussian_log_prob(params['loc'], params['log_scale'], x)

  def mean(self, lik, params):
    return params['loc']


class DiscretizedLogistic(Family):
  """The discretized logistic over 256 bins (PixelCNN++, IAF), location in [-1, 1]."""
  name = 'discretized_logistic'
  params_per_channel = 2

  def params(self, lik, raw, learned_log_scale):
    loc, log_scale = jnp.split(raw, 2, axis=-1)
    return {'loc': jnp.tanh(loc), 'log_scale': jnp.maximum(log_scale, lik.min_log_scale)}

  def log_prob_per_pixel(self, lik, params, x):
    return discretized_logistic_log_prob(params['loc'], params['log_scale'], x)

  def mean(self, lik, params):
    return 0.5 * (params['loc'] + 1.0)


for _family, _pixels in ((Bernoulli(), 'binary'), (ContinuousBernoulli(), 'continuous'),
                         (Gaussian(), 'continuous'), (DiscretizedLogistic(), '8bit')):
  register(_family, _pixels)


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """Maps decoder output to distribution parameters and scores images: the registered
  `Family` named `name`, with its options.

  Attributes:
    name: a key of REGISTRY.
    gaussian_scale: for 'gaussian', how the standard deviation is set: 'fixed'
      (to `fixed_scale`), 'global' (one learned scalar) or 'pixel' (one learned
      value per pixel and channel).
    fixed_scale: the standard deviation of a fixed-scale Gaussian.
    min_log_scale: lower clamp for learned log standard deviations, which keeps
      a Gaussian or logistic from collapsing onto a pixel value.
    bernoulli_impl: how the (continuous) Bernoulli is computed and differentiated, one of
      BERNOULLI_IMPLS: 'fused' (`bernoulli_log_prob_sum_fused`; the continuous Bernoulli's
      softplus through `softplus`) or 'autodiff' (the per-pixel sum, differentiated by JAX).
  """
  name: str = 'bernoulli'
  gaussian_scale: str = 'fixed'
  fixed_scale: float = 1.0
  min_log_scale: float = -7.0
  bernoulli_impl: str = 'fused'

  def __post_init__(self):
    if self.name not in REGISTRY:
      raise ValueError(f'unknown likelihood {self.name!r}; choose one of {tuple(REGISTRY)}')
    if self.gaussian_scale not in GAUSSIAN_SCALES:
      raise ValueError(f'unknown gaussian_scale {self.gaussian_scale!r}; '
                       f'choose one of {GAUSSIAN_SCALES}')

  @property
  def family(self) -> Family:
    return REGISTRY[self.name]

  @property
  def params_per_channel(self) -> int:
    """How many decoder output channels each image channel needs."""
    return self.family.params_per_channel

  def learned_scale_shape(self, image_shape) -> Optional[tuple]:
    """Shape of a free (not z-dependent) learned log-scale parameter, or None."""
    return self.family.learned_scale_shape(self, image_shape)

  def params(self, raw, learned_log_scale=None):
    """Splits raw decoder output [..., H, W, C * params_per_channel] into a dict."""
    return self.family.params(self, raw, learned_log_scale)

  def log_prob_per_pixel(self, params, x):
    return self.family.log_prob_per_pixel(self, params, x)

  def log_prob(self, params, x, grouped_logs=False):
    """log p(x | z) in nats per example: [..., H, W, C] -> [...].

    The Bernoulli with bernoulli_impl='fused' sums with one log per pixel group and its
    derivative from the same pass (`bernoulli_log_prob_sum_fused`); with 'autodiff' (runs
    saved before the field) per pixel, unless `grouped_logs` (the importance-sampling
    estimator's forward-only `bernoulli_log_prob_sum`). The sums agree to float32 rounding.
    """
    with jax.named_scope('likelihood'):
      return self.family.log_prob(self, params, x, grouped_logs)

  def mean(self, params):
    """The image to show, clipped to [0, 1]: [..., H, W, C]."""
    return jnp.clip(self.family.mean(self, params), 0.0, 1.0)
