"""The convolutional two-level networks of the VampPrior paper and its successors (ConvHVAE;
Tomczak & Welling 2018, Norouzi et al. 2020), written from the papers' description.

Every layer is gated: h = f(x) * sigmoid(g(x)) with f and g two convolutions (or dense
layers) of the same shape. For `channels=(c0, c1)` (the papers' (32, 64)) and 28x28 images:

- q(z2 | x) (`ConvTopEncoder`): gated convs c0 7x7, c0 3x3 stride 2, c1 5x5, c1 3x3 stride 2,
  FEATURE_CHANNELS 3x3 -> a 7x7x6 map (294 features) -> the Gaussian head (log-variance
  clamped like the MLP's).
- q(z1 | x, z2) (`ConvZ1Encoder`): the same stack with 3x3 kernels on x, a gated dense layer
  z2 -> 294, and a gated dense layer of `width` on their concatenation -> the head. x's stack
  runs once per image, whatever the number of z2 samples.
- p(x | z1, z2) (`ConvHVAEDecoder`): gated dense z1 -> width and z2 -> width, a gated dense
  layer from their concatenation to an image-sized map, then 4 gated 3x3 convs of c1
  channels at full resolution and a 1x1 conv to the likelihood's parameters.

p(z1 | z2) is the MLP model's (`models.MLPEncoder` on z2, gated dense layers of
`model.hidden`). Paddings are k // 2 on each side, so stride 2 maps 28 -> 14 -> 7.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from vae.families.layers import GatedDense, gaussian_head

FEATURE_CHANNELS = 6   # the papers' last encoder map: 7 x 7 x 6 = 294 features at 28 x 28
DECODER_CONVS = 4      # gated 3x3 convs of the decoder at full resolution


class GatedConv(nn.Module):
  """(W * x + b) * sigmoid(V * x + c) for convolutions W, V: k x k, `stride`, pad k // 2."""
  features: int
  kernel: int
  stride: int = 1
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    pad = self.kernel // 2
    conv = lambda name: nn.Conv(self.features, (self.kernel, self.kernel),
                                strides=(self.stride, self.stride),
                                padding=((pad, pad), (pad, pad)), dtype=self.dtype, name=name)
    return conv('value')(x) * nn.sigmoid(conv('gate')(x))


def encoder_stack(channels, kernels):
  """[(features, kernel, stride)]: per width a stride-1 conv (kernel from `kernels`) and a
  3x3 stride-2 conv, then the FEATURE_CHANNELS map."""
  layers = []
  for ch, k in zip(channels, kernels):
    layers += [(ch, k, 1), (ch, 3, 2)]
  return layers + [(FEATURE_CHANNELS, 3, 1)]


def _features(x, layers, dtype):
  """Images [..., H, W, C] -> flat features [..., h * w * FEATURE_CHANNELS]."""
  lead = x.shape[:-3]
  h = x.reshape((-1,) + x.shape[-3:]).astype(dtype or jnp.float32)
  for i, (features, kernel, stride) in enumerate(layers):
    h = GatedConv(features, kernel, stride, dtype, name=f'gated_conv_{i}')(h)
  return h.reshape(lead + (-1,))


class ConvTopEncoder(nn.Module):
  """q(z2 | x): images [..., H, W, C] -> (mean, logvar) [..., D] (and the 294 features, an
  IAF's context, with `return_features`)."""
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  logvar_min: Optional[float] = None
  logvar_max: Optional[float] = None
  dtype: Optional[jnp.dtype] = None
  return_features: bool = False

  @nn.compact
  def __call__(self, x):
    kernels = [7] + [5] * (len(self.channels) - 1)
    h = _features(x, encoder_stack(self.channels, kernels), self.dtype)
    mean, logvar = gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max,
                                 self.dtype)
    return (mean, logvar, h.astype(jnp.float32)) if self.return_features else (mean, logvar)


class ConvZ1Encoder(nn.Module):
  """q(z1 | x, z2): images x [B, H, W, C] and z2 [..., B, D] (leading sample axes allowed)
  -> (mean, logvar) [..., B, D] (and the joint layer, an IAF's context)."""
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  width: int = 300
  logvar_min: Optional[float] = None
  logvar_max: Optional[float] = None
  dtype: Optional[jnp.dtype] = None
  return_features: bool = False

  @nn.compact
  def __call__(self, x, z2):
    hx = _features(x, encoder_stack(self.channels, [3] * len(self.channels)), self.dtype)
    hz = GatedDense(hx.shape[-1], dtype=self.dtype, name='z2')(z2.astype(self.dtype or jnp.float32))
    h = GatedDense(self.width, dtype=self.dtype, name='joint')((hx, hz))
    mean, logvar = gaussian_head(h, self.latent_dim, self.logvar_min, self.logvar_max,
                                 self.dtype)
    return (mean, logvar, h.astype(jnp.float32)) if self.return_features else (mean, logvar)


class ConvHVAEDecoder(nn.Module):
  """p(x | z1, z2): z = [z1, z2] [..., 2 D] -> raw likelihood parameters
  [..., H, W, C * params_per_channel]."""
  out_shape: Sequence[int]
  image_channels: int
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  width: int = 300
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z):
    height, width, out_ch = self.out_shape
    lead = z.shape[:-1]
    z = z.reshape(-1, z.shape[-1]).astype(self.dtype or jnp.float32)
    z1, z2 = z[:, :self.latent_dim], z[:, self.latent_dim:]
    h = jnp.concatenate([GatedDense(self.width, dtype=self.dtype, name='z1')(z1),
                         GatedDense(self.width, dtype=self.dtype, name='z2')(z2)], -1)
    h = GatedDense(height * width * self.image_channels, dtype=self.dtype, name='to_image')(h)
    h = h.reshape(-1, height, width, self.image_channels)
    for i in range(DECODER_CONVS):
      h = GatedConv(self.channels[-1], 3, 1, self.dtype, name=f'gated_conv_{i}')(h)
    out = nn.Conv(out_ch, (1, 1), dtype=self.dtype, name='output')(h)
    return out.astype(jnp.float32).reshape(lead + tuple(self.out_shape))
