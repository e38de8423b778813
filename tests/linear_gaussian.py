"""A linear-Gaussian VAE whose log p(x) and exact posterior are known in closed form.

p(z) = N(0, I_d), p(x | z) = N(W z + b, sigma^2 I_n), so p(x) = N(b, W W^T + sigma^2 I).
W has orthogonal columns (W = Q diag(s)), so the exact posterior
N(M^-1 W^T (x - b) / sigma^2, M^-1) with M = I + W^T W / sigma^2 is diagonal and
a diagonal-Gaussian encoder can represent it. The model is a real `vae.families.models.VAE`
(linear encoder and decoder modules), so tests exercise the library's code paths.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vae.families.likelihoods import Likelihood
from vae.families.models import VAE


class LinearEncoder(nn.Module):
  latent_dim: int

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[:-3] + (-1,))
    mean = nn.Dense(self.latent_dim, name='mean')(h)
    logvar = self.param('logvar', nn.initializers.zeros, (self.latent_dim,))
    return mean, jnp.broadcast_to(logvar, mean.shape)


class LinearDecoder(nn.Module):
  n: int

  @nn.compact
  def __call__(self, z):
    return nn.Dense(self.n, name='out')(z).reshape(z.shape[:-1] + (1, 1, self.n))


def make_problem(n=6, d=3, sigma=0.7, seed=0):
  """Returns (model, true_params, exact_posterior_params, log_px_fn, sample_x_fn)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(n, d)))
  s = rng.uniform(0.5, 2.0, d)
  w = q * s                                      # [n, d], orthogonal columns
  b = rng.normal(size=n)
  model = VAE(LinearEncoder(d), LinearDecoder(n), Likelihood('gaussian', 'fixed', sigma),
              (1, 1, n), d)
  m_diag = 1.0 + s ** 2 / sigma ** 2              # W^T W = diag(s^2)
  post_var = 1.0 / m_diag
  enc_kernel = (w / sigma ** 2) * post_var[None, :]  # mean = (x - b) W M^-1 / sigma^2
  exact = {
      'encoder': {'mean': {'kernel': jnp.asarray(enc_kernel, jnp.float32),
                           'bias': jnp.asarray(-b @ enc_kernel, jnp.float32)},
                  'logvar': jnp.asarray(np.log(post_var), jnp.float32)},
      'decoder': {'out': {'kernel': jnp.asarray(w.T, jnp.float32),
                          'bias': jnp.asarray(b, jnp.float32)}},
  }
  cov = w @ w.T + sigma ** 2 * np.eye(n)
  cov_inv = np.linalg.inv(cov)
  _, logdet = np.linalg.slogdet(cov)

  def log_px(x):
    x = np.asarray(x, np.float64).reshape(-1, n) - b
    return -0.5 * (n * np.log(2 * np.pi) + logdet + np.einsum('bi,ij,bj->b', x, cov_inv, x))

  def sample_x(num, seed=1):
    r = np.random.default_rng(seed)
    z = r.normal(size=(num, d))
    x = z @ w.T + b + sigma * r.normal(size=(num, n))
    return jnp.asarray(x.reshape(num, 1, 1, n), jnp.float32)

  return model, exact, log_px, sample_x


def perturbed(exact, scale=0.3, logvar_shift=0.8):
  """A worse (non-exact) encoder: shifted mean weights and inflated variance."""
  enc = exact['encoder']
  return {
      'encoder': {'mean': {'kernel': enc['mean']['kernel'] * (1.0 + scale),
                           'bias': enc['mean']['bias'] + scale},
                  'logvar': enc['logvar'] + logvar_shift},
      'decoder': exact['decoder'],
  }
