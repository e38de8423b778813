"""Flax encoders, decoders, the VAE and its deterministic twin, the plain autoencoder.

Shapes: images are [..., H, W, C] floats in [0, 1]; latents are [..., D]. Any
number of leading axes is allowed (the importance sampler decodes [S, B, D]).
The encoder returns the mean and log-variance of a diagonal Gaussian q(z | x);
the decoder returns the raw parameters of the likelihood, which `VAE.decode`
turns into a dict through `Likelihood.params`.
"""

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae.config_lib import check
from vae.likelihoods import Likelihood
from vae.objectives import reparameterize

ACTIVATIONS = {
    'relu': nn.relu,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'softplus': nn.softplus,
    'elu': nn.elu,
    'swish': nn.swish,
    'leaky_relu': nn.leaky_relu,
}
ARCHS = ('mlp', 'conv')
UPSAMPLE = ('subpixel', 'transpose')


def kernel_init(init_std):
  """N(0, init_std^2) weights when init_std > 0, else Flax's default (LeCun normal)."""
  return nn.initializers.normal(init_std) if init_std else nn.linear.default_kernel_init


class GatedDense(nn.Module):
  """h = (W x + b) * sigmoid(V x + c), the gated layer of Tomczak & Welling's VampPrior code."""
  features: int
  dtype: Optional[jnp.dtype] = None
  init_std: float = 0.0

  @nn.compact
  def __call__(self, x):
    init = kernel_init(self.init_std)
    h = nn.Dense(self.features, dtype=self.dtype, kernel_init=init, name='value')(x)
    g = nn.Dense(self.features, dtype=self.dtype, kernel_init=init, name='gate')(x)
    return h * nn.sigmoid(g)


class MLP(nn.Module):
  """Hidden layers only: Dense + activation, or gated dense layers."""
  hidden: Sequence[int]
  activation: str = 'relu'
  gated: bool = False
  dtype: Optional[jnp.dtype] = None
  init_std: float = 0.0

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.hidden):
      if self.gated:
        x = GatedDense(width, dtype=self.dtype, init_std=self.init_std, name=f'gated_{i}')(x)
      else:
        x = act(nn.Dense(width, dtype=self.dtype, kernel_init=kernel_init(self.init_std),
                         name=f'dense_{i}')(x))
    return x


def _gaussian_head(h, latent_dim, logvar_min, logvar_max, dtype, init_std=0.0):
  out = nn.Dense(2 * latent_dim, dtype=dtype, kernel_init=kernel_init(init_std),
                 name='gaussian_head')(h)
  mean, logvar = jnp.split(out.astype(jnp.float32), 2, axis=-1)
  if logvar_min is not None or logvar_max is not None:
    logvar = jnp.clip(logvar, logvar_min, logvar_max)
  return mean, logvar


class MLPEncoder(nn.Module):
  """[..., H, W, C] -> (mean [..., D], logvar [..., D])."""
  latent_dim: int
  hidden: Sequence[int] = (500,)
  activation: str = 'relu'
  gated: bool = False
  logvar_min: Optional[float] = None
  logvar_max: Optional[float] = None
  dtype: Optional[jnp.dtype] = None
  init_std: float = 0.0

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[:-3] + (-1,)).astype(self.dtype or jnp.float32)
    h = MLP(self.hidden, self.activation, self.gated, self.dtype, self.init_std, name='mlp')(h)
    return _gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max, self.dtype,
                          self.init_std)


class MLPDecoder(nn.Module):
  """[..., D] -> raw likelihood parameters [..., H, W, C * params_per_channel]."""
  out_shape: Sequence[int]
  hidden: Sequence[int] = (500,)
  activation: str = 'relu'
  gated: bool = False
  dtype: Optional[jnp.dtype] = None
  init_std: float = 0.0

  @nn.compact
  def __call__(self, z):
    h = MLP(self.hidden, self.activation, self.gated, self.dtype, self.init_std, name='mlp')(
        z.astype(self.dtype or jnp.float32))
    size = 1
    for s in self.out_shape:
      size *= s
    out = nn.Dense(size, dtype=self.dtype, kernel_init=kernel_init(self.init_std),
                   name='output')(h)
    return out.astype(jnp.float32).reshape(z.shape[:-1] + tuple(self.out_shape))


class ConvEncoder(nn.Module):
  """Strided 4x4 convolutions, each halving H and W, then a dense Gaussian head."""
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  dense: int = 256
  activation: str = 'relu'
  logvar_min: Optional[float] = None
  logvar_max: Optional[float] = None
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    lead = x.shape[:-3]
    h = x.reshape((-1,) + x.shape[-3:]).astype(self.dtype or jnp.float32)
    for i, ch in enumerate(self.channels):
      h = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding='SAME', dtype=self.dtype,
                      name=f'conv_{i}')(h))
    h = h.reshape(h.shape[0], -1)
    if self.dense:
      h = act(nn.Dense(self.dense, dtype=self.dtype, name='dense')(h))
    mean, logvar = _gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max,
                                  self.dtype)
    return mean.reshape(lead + mean.shape[-1:]), logvar.reshape(lead + logvar.shape[-1:])


def depth_to_space(h, factor=2):
  """[B, H, W, C * f^2] -> [B, H * f, W * f, C] (the pixel shuffle)."""
  b, height, width, c = h.shape
  c_out = c // (factor * factor)
  h = h.reshape(b, height, width, factor, factor, c_out).transpose(0, 1, 3, 2, 4, 5)
  return h.reshape(b, height * factor, width * factor, c_out)


class ConvDecoder(nn.Module):
  """Dense to an [H / 2^L, W / 2^L] map, then L stride-2 upsampling layers.

  `upsample='transpose'` uses 4x4 stride-2 transposed convolutions;
  'subpixel' (Shi et al. 2016) a 3x3 convolution to 4x the channels followed by
  a pixel shuffle, which spans the same family of maps and whose gradient is
  about 6x faster on XLA's CPU backend (docs/benchmarks.md).
  """
  out_shape: Sequence[int]
  channels: Sequence[int] = (32, 64)  # listed as in the encoder; used in reverse
  dense: int = 256
  activation: str = 'relu'
  upsample: str = 'subpixel'
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z):
    act = ACTIVATIONS[self.activation]
    height, width, out_ch = self.out_shape
    factor = 2 ** len(self.channels)
    lead = z.shape[:-1]
    h = z.reshape(-1, z.shape[-1]).astype(self.dtype or jnp.float32)
    if self.dense:
      h = act(nn.Dense(self.dense, dtype=self.dtype, name='dense')(h))
    top = self.channels[-1]
    h = act(nn.Dense(height // factor * width // factor * top, dtype=self.dtype,
                     name='project')(h))
    h = h.reshape(-1, height // factor, width // factor, top)
    for i, ch in enumerate(reversed(self.channels)):
      if self.upsample == 'transpose':
        h = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding='SAME', dtype=self.dtype,
                             name=f'deconv_{i}')(h)
      else:
        h = depth_to_space(nn.Conv(4 * ch, (3, 3), padding='SAME', dtype=self.dtype,
                                   name=f'upconv_{i}')(h))
      h = act(h)
    out = nn.Conv(out_ch, (3, 3), padding='SAME', dtype=self.dtype, name='output')(h)
    return out.astype(jnp.float32).reshape(lead + tuple(self.out_shape))


class VAE(nn.Module):
  """Encoder, reparameterized Gaussian posterior, decoder and likelihood.

  With `deterministic=True` it is the plain autoencoder built from the same
  modules: z = mean, and the objective drops the KL term.
  """
  encoder: nn.Module
  decoder: nn.Module
  likelihood: Likelihood
  image_shape: Sequence[int]
  latent_dim: int
  deterministic: bool = False

  def setup(self):
    shape = self.likelihood.learned_scale_shape(self.image_shape)
    self.learned_log_scale = (None if shape is None else
                              self.param('log_scale', nn.initializers.zeros, shape))

  def encode(self, x):
    """x [..., H, W, C] -> (mean, logvar), each [..., D]."""
    return self.encoder(x)

  def decode(self, z):
    """z [..., D] -> likelihood parameters (dict of [..., H, W, C])."""
    return self.likelihood.params(self.decoder(z), self.learned_log_scale)

  def decode_mean(self, z):
    """z [..., D] -> mean image [..., H, W, C] in [0, 1]."""
    return self.likelihood.mean(self.decode(z))

  def __call__(self, x, key):
    """One posterior sample: returns dict(params, mean, logvar, z)."""
    mean, logvar = self.encode(x)
    z = mean if self.deterministic else reparameterize(key, mean, logvar)
    return {'params': self.decode(z), 'mean': mean, 'logvar': logvar, 'z': z}

  def generate(self, key, n, temperature=1.0):
    """n images decoded from z ~ N(0, temperature^2 I): [n, H, W, C] means."""
    z = temperature * jax.random.normal(key, (n, self.latent_dim))
    return self.decode_mean(z)


TYPES = ('vae', 'ae')
COMPUTE_DTYPES = ('float32', 'bfloat16')


def check_config(mc):
  """Checks the fields of `config.model` that this module reads (ConfigError naming them)."""
  check(mc.type in TYPES, f'model.type={mc.type!r}; choose one of {TYPES}')
  check(mc.arch in ARCHS, f'model.arch={mc.arch!r} is unknown; choose one of {ARCHS}')
  check(mc.latent_dim >= 1, f'model.latent_dim={mc.latent_dim} must be >= 1')
  check(mc.activation in ACTIVATIONS, f'model.activation={mc.activation!r} is unknown; choose '
        f'one of {tuple(ACTIVATIONS)}')
  check(all(h >= 1 for h in mc.hidden), f'model.hidden={mc.hidden} needs widths >= 1')
  check(len(mc.conv_channels) >= 1 and all(ch >= 1 for ch in mc.conv_channels),
        f'model.conv_channels={mc.conv_channels} needs at least one width >= 1')
  check(mc.conv_upsample in UPSAMPLE,
        f'model.conv_upsample={mc.conv_upsample!r}; choose one of {UPSAMPLE}')
  check(mc.logvar_min < mc.logvar_max, 'model.logvar_min must be < model.logvar_max')
  check(mc.compute_dtype in COMPUTE_DTYPES,
        f'model.compute_dtype={mc.compute_dtype!r}; choose one of {COMPUTE_DTYPES}')
  check(mc.init_std >= 0, 'model.init_std must be >= 0')


def check_image_shape(mc, image_shape):
  """A conv model halves H and W once per channel width: they must divide."""
  if mc.arch != 'conv':
    return
  factor = 2 ** len(mc.conv_channels)
  check(image_shape[0] % factor == 0 and image_shape[1] % factor == 0,
        f'model.arch=conv with {len(mc.conv_channels)} stride-2 layers needs H and W divisible '
        f'by {factor}, got {image_shape[0]}x{image_shape[1]}; change model.conv_channels')


def build_model(model_config, image_shape, dtype=None) -> VAE:
  """Builds the VAE (or autoencoder) that `model_config` describes.

  Args:
    model_config: the `config.model` ConfigDict (see configs/default.py).
    image_shape: (H, W, C) of the data.
    dtype: computation dtype (None: float32); parameters stay float32.

  Returns:
    An unbound `VAE` module.
  """
  mc = model_config
  check_config(mc)
  check_image_shape(mc, image_shape)
  likelihood = Likelihood(mc.likelihood, mc.gaussian_scale, mc.gaussian_fixed_scale)
  height, width, channels = image_shape
  out_shape = (height, width, channels * likelihood.params_per_channel)
  logvar_min = mc.logvar_min if mc.clamp_logvar else None
  logvar_max = mc.logvar_max if mc.clamp_logvar else None
  if mc.arch == 'mlp':
    encoder = MLPEncoder(mc.latent_dim, tuple(mc.hidden), mc.activation, mc.gated,
                         logvar_min, logvar_max, dtype, mc.init_std)
    decoder = MLPDecoder(out_shape, tuple(reversed(mc.hidden)), mc.activation, mc.gated,
                         dtype, mc.init_std)
  else:
    encoder = ConvEncoder(mc.latent_dim, tuple(mc.conv_channels), mc.conv_dense,
                          mc.activation, logvar_min, logvar_max, dtype)
    decoder = ConvDecoder(out_shape, tuple(mc.conv_channels), mc.conv_dense, mc.activation,
                          mc.conv_upsample, dtype)
  return VAE(encoder, decoder, likelihood, tuple(image_shape), mc.latent_dim,
             deterministic=(mc.type == 'ae'))
