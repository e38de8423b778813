"""Inverse autoregressive flow (Kingma et al. 2016) on top of the diagonal Gaussian posterior.

One IAF step: a MADE network (Germain et al. 2015) reads z and the encoder's
context vector h and gives (m, s), where m_d and s_d depend on z only through
the dimensions before d in the step's order; then
    sigma = sigmoid(s),  z' = sigma * z + (1 - sigma) * m,
whose Jacobian is triangular with diagonal sigma, so
    log |det dz'/dz| = sum_d log sigmoid(s_d)
and log q(z_T | x) = log N(z_0; mean, var) - sum_t sum_d log sigmoid(s_{t,d}).
The gate's bias starts at `FORGET_BIAS` (sigmoid ~ 0.88), so each step starts
close to the identity. Steps alternate the order (forward, reversed, ...).
`inverse_step` undoes one step by solving it dimension by dimension.

The posteriors are registered by name in `REGISTRY` (`register`): 'diagonal' (no flow) and
'iaf'; `model.posterior` may name any registered one.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae.config_lib import check

FORGET_BIAS = 2.0


def check_config(mc):
  """Checks `model.posterior`, `model.flow_steps` and `model.flow_hidden`."""
  check(mc.posterior in REGISTRY,
        f'model.posterior={mc.posterior!r} is unknown; choose one of {tuple(REGISTRY)}')
  check(mc.flow_steps >= 1, f'model.flow_steps={mc.flow_steps} must be >= 1')
  check(len(mc.flow_hidden) >= 1 and all(h >= 1 for h in mc.flow_hidden),
        f'model.flow_hidden={mc.flow_hidden} needs at least one width >= 1')


def made_degrees(dim, hidden, reverse=False):
  """MADE degrees: the inputs' (1..D in the step's order) and each hidden layer's."""
  order = np.arange(1, dim + 1)
  inputs = order[::-1].copy() if reverse else order
  # Hidden degrees run over 0..D-1: degree-0 units see no z (the context alone), and
  # feed the first dimension in the order, which would otherwise see only a bias.
  return inputs, [np.arange(h) % dim for h in hidden]


def made_masks(dim, hidden, reverse=False):
  """The 0/1 masks [in, out] of each MADE layer, the last one to the D outputs (strict)."""
  inputs, hid = made_degrees(dim, hidden, reverse)
  masks, prev = [], inputs
  for deg in hid:
    masks.append((deg[None, :] >= prev[:, None]).astype(np.float32))
    prev = deg
  masks.append((inputs[None, :] > prev[:, None]).astype(np.float32))
  return masks


class MaskedDense(nn.Module):
  features: int
  mask: np.ndarray
  bias_init: float = 0.0
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.linear.default_kernel_init, (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init), (self.features,))
    w = (kernel * jnp.asarray(self.mask)).astype(self.dtype or jnp.float32)
    return jnp.matmul(x.astype(w.dtype), w).astype(jnp.float32) + bias


class IAFStep(nn.Module):
  """One IAF step: (z [..., D], context [..., C]) -> (z', log_det [...])."""
  hidden: Sequence[int]
  reverse: bool = False
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z, context, shift_and_gate=False):
    """(z', log_det [...]); with `shift_and_gate` the MADE outputs (m, s) instead, each
    [..., D]: m_d and s_d see z only through the dimensions before d in the order."""
    dim = z.shape[-1]
    masks = made_masks(dim, tuple(self.hidden), self.reverse)
    h = z
    for i, width in enumerate(self.hidden):
      h = MaskedDense(width, masks[i], dtype=self.dtype, name=f'masked_{i}')(h)
      if i == 0 and context is not None:
        h = h + nn.Dense(width, dtype=self.dtype, name='context')(context).astype(jnp.float32)
      h = nn.elu(h)
    m = MaskedDense(dim, masks[-1], dtype=self.dtype, name='shift')(h)
    s = MaskedDense(dim, masks[-1], bias_init=FORGET_BIAS, dtype=self.dtype, name='gate')(h)
    if shift_and_gate:
      return m, s
    sigma = nn.sigmoid(s)
    return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)


class IAF(nn.Module):
  """`steps` IAF steps with alternating orders."""
  steps: int
  hidden: Sequence[int]
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z, context):
    """z [..., D], context [..., C] (broadcast to z's leading axes) -> (z_T, sum log-dets)."""
    context = jnp.broadcast_to(context, z.shape[:-1] + context.shape[-1:])
    total = jnp.zeros(z.shape[:-1])
    for t in range(self.steps):
      z, log_det = IAFStep(tuple(self.hidden), reverse=bool(t % 2), dtype=self.dtype,
                           name=f'step_{t}')(z, context)
      total = total + log_det
    return z, total


def inverse_step(step_fn, z_new, reverse=False):
  """Solves z' = sigmoid(s(z)) * z + (1 - sigmoid(s(z))) * m(z) for z, one dimension at a
  time in the step's order (m_d and s_d depend only on the dimensions solved before d).

  Args:
    step_fn: z [..., D] -> (m, s) of the step (`IAFStep` applied with
      shift_and_gate=True and its context fixed).
    z_new: z' [..., D].
    reverse: the step's order.

  Returns:
    z [..., D].
  """
  dim = z_new.shape[-1]
  order = range(dim - 1, -1, -1) if reverse else range(dim)
  z = jnp.zeros_like(z_new)
  for d in order:
    m, s = step_fn(z)
    sigma = nn.sigmoid(s[..., d])
    z = z.at[..., d].set((z_new[..., d] - (1.0 - sigma) * m[..., d]) / sigma)
  return z


REGISTRY = {}


def register(name, build, context=False):
  """Makes model.posterior=name available: `build(model_config, dtype)` returns the flow
  applied to the diagonal Gaussian's reparameterized draw, a module (z, context) -> (z',
  log |det dz'/dz|), or None for the diagonal Gaussian itself; with `context` the encoders
  also return their last hidden layer, which the flow reads."""
  REGISTRY[name] = (build, context)
  return build


register('diagonal', lambda mc, dtype: None)
register('iaf', lambda mc, dtype: IAF(mc.flow_steps, tuple(mc.flow_hidden), dtype), context=True)
