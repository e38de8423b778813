"""The networks of the one-stochastic-layer models: MLP and convolutional encoders and decoders.

An encoder maps images [..., H, W, C] to the mean and log-variance of a diagonal Gaussian
[..., D] each; a decoder maps latents [..., D] to the likelihood's raw parameters (the VAE of
`models` assembles them). The two-layer ConvHVAE's networks are in `gated_conv`.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from vae.families.layers import GatedDense, SharedInputDense, gaussian_head, kernel_init

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


class MLP(nn.Module):
  """Hidden layers only: Dense + activation, or gated dense layers. The input is an array,
  or a pair (shared, own) that the first layer reads as their concatenation
  (`SharedInputDense`); hidden must not be empty then."""
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
        dense = SharedInputDense if isinstance(x, tuple) else nn.Dense
        x = act(dense(width, dtype=self.dtype, kernel_init=kernel_init(self.init_std),
                      name=f'dense_{i}')(x))
    return x


class MLPEncoder(nn.Module):
  """[..., H, W, C] -> (mean [..., D], logvar [..., D]); with `return_features` also the last
  hidden layer [..., hidden[-1]] (an IAF's context). `flat_input` takes vectors [..., P]
  instead of images (the two-level model's q(z1 | x, z2) and p(z1 | z2))."""
  latent_dim: int
  hidden: Sequence[int] = (500,)
  activation: str = 'relu'
  gated: bool = False
  logvar_min: Optional[float] = None
  logvar_max: Optional[float] = None
  dtype: Optional[jnp.dtype] = None
  init_std: float = 0.0
  return_features: bool = False
  flat_input: bool = False

  @nn.compact
  def __call__(self, x):
    dtype = self.dtype or jnp.float32
    if isinstance(x, tuple):
      assert self.flat_input and self.hidden, 'a (shared, own) pair needs flat_input, hidden'
      h = tuple(a.astype(dtype) for a in x)
    else:
      h = (x if self.flat_input else x.reshape(x.shape[:-3] + (-1,))).astype(dtype)
    h = MLP(self.hidden, self.activation, self.gated, self.dtype, self.init_std, name='mlp')(h)
    mean, logvar = gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max,
                                  self.dtype, self.init_std)
    return (mean, logvar, h.astype(jnp.float32)) if self.return_features else (mean, logvar)


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
  return_features: bool = False

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
    mean, logvar = gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max,
                                  self.dtype)
    out = (mean.reshape(lead + mean.shape[-1:]), logvar.reshape(lead + logvar.shape[-1:]))
    if self.return_features:
      out += (h.astype(jnp.float32).reshape(lead + h.shape[-1:]),)
    return out


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
