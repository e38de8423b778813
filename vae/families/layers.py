"""The dense layers the model families share: the gated layer of Tomczak & Welling's VampPrior
code (`GatedDense`), a dense layer over a (shared, per-sample) pair of inputs
(`SharedInputDense`), and the Gaussian head of every encoder (`gaussian_head`)."""

from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp


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
    dense = SharedInputDense if isinstance(x, tuple) else nn.Dense
    h = dense(self.features, dtype=self.dtype, kernel_init=init, name='value')(x)
    g = dense(self.features, dtype=self.dtype, kernel_init=init, name='gate')(x)
    return h * nn.sigmoid(g)


class SharedInputDense(nn.Module):
  """nn.Dense of concat([shared, own], -1) for a pair (shared [B, P], own [..., B, Q]) whose
  `shared` part is the same for every leading sample axis of `own`: shared @ W[:P] + b runs
  once and broadcasts over the samples, own @ W[P:] runs per sample. The parameters are
  nn.Dense's (`kernel` [P + Q, F], `bias`), so it reads the weights of a Dense of that name;
  the value equals the concatenated layer's up to float rounding (the two-level model's
  q(z1 | x, z2) under S importance samples: x's 784 inputs no longer go through the first
  layer S times)."""
  features: int
  dtype: Optional[jnp.dtype] = None
  kernel_init: Callable = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, inputs):
    shared, own = inputs
    p = shared.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (p + own.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    shared, own, kernel, bias = nn.dtypes.promote_dtype(shared, own, kernel, bias,
                                                        dtype=self.dtype)
    return (shared @ kernel[:p] + bias) + own @ kernel[p:]


def gaussian_head(h, latent_dim, logvar_min, logvar_max, dtype, init_std=0.0):
  """A diagonal Gaussian's (mean, logvar) [..., latent_dim] from features h, through one dense
  layer named 'gaussian_head' in the calling module; logvar clamped where a bound is set."""
  out = nn.Dense(2 * latent_dim, dtype=dtype, kernel_init=kernel_init(init_std),
                 name='gaussian_head')(h)
  mean, logvar = jnp.split(out.astype(jnp.float32), 2, axis=-1)
  if logvar_min is not None or logvar_max is not None:
    logvar = jnp.clip(logvar, logvar_min, logvar_max)
  return mean, logvar
