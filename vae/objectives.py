"""The variational objectives, per example and in nats: reparameterization, KL, ELBO, IWAE.

Everything here is a pure function of explicit arrays and PRNG keys. Every
per-example function keeps the batch axis: training takes the mean, evaluation
sums with a mask. Sign conventions: `elbo`, `recon` and `iwae` are log-likelihood
bounds (higher is better, negative for images); `kl` is >= 0; `loss` is what
the optimizer minimizes.
"""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(key, mean, logvar, num_samples=None):
  """Draws z = mean + exp(logvar / 2) * eps with eps ~ N(0, I) from `key`.

  The randomness lives in eps alone, so z is a differentiable function of mean
  and logvar: d z / d mean = 1 and d z / d logvar = eps * exp(logvar / 2) / 2.

  Args:
    key: a PRNG key; the same key gives the same z.
    mean: [..., D].
    logvar: [..., D], log of the diagonal variance.
    num_samples: None for one sample of shape [..., D], or S for [S, ..., D].

  Returns:
    z with shape [..., D] or [S, ..., D].
  """
  shape = mean.shape if num_samples is None else (num_samples,) + mean.shape
  eps = jax.random.normal(key, shape, dtype=mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl_per_dim(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) per dimension, nats: [..., D]."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def gaussian_kl(mean, logvar):
  """KL(q || N(0, I)) per example in nats, summed over the latent axis: [...]."""
  return jnp.sum(gaussian_kl_per_dim(mean, logvar), axis=-1)


def log_normal_diag(z, mean, logvar):
  """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def log_standard_normal(z):
  """log N(z; 0, I), summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def log_mean_exp(x, axis=0):
  """log(mean(exp(x))) along `axis`, without overflow or underflow."""
  return jax.nn.logsumexp(x, axis=axis) - math.log(x.shape[axis])


def kl_weight(step, beta, warmup_steps):
  """The KL weight at `step`: ramps linearly from 0 to `beta` over `warmup_steps`."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  frac = jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)
  return beta * frac


def free_bits_kl(kl_per_dim, free_bits, mask=None):
  """KL with a per-dimension floor (Kingma et al. 2016), per example: [B, D] -> [B].

  A latent dimension whose KL averaged over the (masked) batch is below
  `free_bits` nats contributes the constant `free_bits` instead, so it gets
  no gradient pushing it to the prior. The batch mean of the result equals
  sum_d max(mean_b KL[b, d], free_bits).
  """
  if free_bits <= 0:
    return jnp.sum(kl_per_dim, axis=-1)
  if mask is None:
    batch_mean = jnp.mean(kl_per_dim, axis=0)
  else:
    w = mask.astype(kl_per_dim.dtype)[:, None]
    batch_mean = jnp.sum(kl_per_dim * w, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
  floored = jnp.where(batch_mean[None, :] < free_bits, free_bits, kl_per_dim)
  return jnp.sum(floored, axis=-1)


def importance_log_weights(model, variables, x, key, num_samples):
  """The two parts of log w_s = log p(x | z_s) + log p(z_s) - log q(z_s | x), z_s ~ q(z | x).

  Args:
    model: a `vae.models.VAE`.
    variables: its Flax variables.
    x: images [B, H, W, C].
    key: PRNG key for the S posterior draws.
    num_samples: S.

  Returns:
    (log_px [S, B], log_ratio [S, B] = log p(z) - log q(z | x), mean [B, D],
    logvar [B, D]).
  """
  mean, logvar = model.apply(variables, x, method=model.encode)
  z = reparameterize(key, mean, logvar, num_samples)                  # [S, B, D]
  params = model.apply(variables, z, method=model.decode)             # [S, B, H, W, C]
  log_px = model.likelihood.log_prob(params, x)                      # [S, B]
  log_ratio = log_standard_normal(z) - log_normal_diag(z, mean, logvar)
  return log_px, log_ratio, mean, logvar


def per_example_objective(model, variables, x, key, *, beta=1.0, free_bits=0.0,
                          num_samples=1, mask=None):
  """The training loss and the reported terms, all per example in nats.

  With num_samples == 1 this is the single-sample ELBO with the analytic KL:
  loss = -(recon - beta * KL), KL floored by free bits. With num_samples = k > 1
  it is the IWAE bound with k samples (Burda et al. 2015): loss =
  -log mean_s w_s, with beta weighting log p(z) - log q(z | x). For the plain
  autoencoder (`model.deterministic`) the loss is -recon and KL is reported as 0.

  Args:
    model: a `vae.models.VAE`.
    variables: Flax variables.
    x: images [B, H, W, C] in [0, 1].
    key: PRNG key for the posterior draws.
    beta: KL weight (a traced scalar is fine).
    free_bits: per-dimension KL floor in nats (single-sample objective only).
    num_samples: k, importance samples per example.
    mask: optional [B] validity mask used by free bits' batch average.

  Returns:
    (loss [B], terms) with terms a dict of [B] arrays: 'recon' (E_q log p(x|z)),
    'kl', 'elbo' (= recon - kl, beta = 1) and, with k > 1, 'iwae'.
  """
  if model.deterministic:
    out = model.apply(variables, x, key)
    recon = model.likelihood.log_prob(out['params'], x)
    zeros = jnp.zeros_like(recon)
    return -recon, {'recon': recon, 'kl': zeros, 'elbo': recon}
  if num_samples == 1:
    out = model.apply(variables, x, key)
    recon = model.likelihood.log_prob(out['params'], x)
    kl_dim = gaussian_kl_per_dim(out['mean'], out['logvar'])
    kl = jnp.sum(kl_dim, axis=-1)
    loss = -(recon - beta * free_bits_kl(kl_dim, free_bits, mask))
    return loss, {'recon': recon, 'kl': kl, 'elbo': recon - kl}
  log_px, log_ratio, mean, logvar = importance_log_weights(model, variables, x, key,
                                                           num_samples)
  loss = -log_mean_exp(log_px + beta * log_ratio, axis=0)
  recon = jnp.mean(log_px, axis=0)
  kl = gaussian_kl(mean, logvar)
  iwae = log_mean_exp(log_px + log_ratio, axis=0)
  return loss, {'recon': recon, 'kl': kl, 'elbo': recon - kl, 'iwae': iwae}
