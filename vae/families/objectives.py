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

from vae.config_lib import check

ESTIMATORS = ('iwae', 'elbo')


def check_config(oc):
  """Checks the fields of `config.objective` (ConfigError naming the field)."""
  check(oc.beta >= 0, f'objective.beta={oc.beta} must be >= 0')
  check(oc.warmup_epochs >= 0, 'objective.warmup_epochs must be >= 0')
  check(oc.free_bits >= 0, 'objective.free_bits must be >= 0')
  check(oc.num_samples >= 1, 'objective.num_samples must be >= 1')
  check(oc.estimator in ESTIMATORS,
        f'objective.estimator={oc.estimator!r}; choose one of {ESTIMATORS}')
  check(not (oc.num_samples > 1 and oc.free_bits > 0),
        'objective.free_bits applies to the single-sample ELBO only; set '
        'objective.num_samples=1 or objective.free_bits=0')

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

  Each latent dimension d draws its noise from fold_in(key, d), so the first D
  columns of eps are the same whatever the total latent size: a model padded
  to a larger latent size sees exactly the noise the smaller model would.
  """
  shape = mean.shape if num_samples is None else (num_samples,) + mean.shape
  draw = lambda d: jax.random.normal(jax.random.fold_in(key, d), shape[:-1], dtype=mean.dtype)
  eps = jax.vmap(draw, out_axes=-1)(jnp.arange(shape[-1]))
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl_per_dim(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) per dimension, nats: [..., D]."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def gaussian_kl(mean, logvar):
  """KL(q || N(0, I)) per example in nats, summed over the latent axis: [...]."""
  return jnp.sum(gaussian_kl_per_dim(mean, logvar), axis=-1)


def gaussian_kl_pair(mean, logvar, prior_mean, prior_logvar):
  """KL(N(mean, exp(logvar)) || N(prior_mean, exp(prior_logvar))) in nats, summed over the
  last axis: [...]."""
  return 0.5 * jnp.sum(prior_logvar - logvar - 1.0 + (jnp.exp(logvar) + jnp.square(
      mean - prior_mean)) * jnp.exp(-prior_logvar), axis=-1)


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
  """The KL weight at `step`: ramps linearly from 0 to `beta` over `warmup_steps`.

  All arguments may be traced (a sweep passes one value per model).
  """
  warmup = jnp.asarray(warmup_steps, jnp.float32)
  frac = jnp.minimum(jnp.asarray(step, jnp.float32) / jnp.maximum(warmup, 1.0), 1.0)
  return jnp.asarray(beta, jnp.float32) * jnp.where(warmup > 0, frac, 1.0)


def free_bits_kl(kl_per_dim, free_bits, mask=None):
  """KL with a per-dimension floor (Kingma et al. 2016), per example: [B, D] -> [B].

  A latent dimension whose KL averaged over the (masked) batch is below
  `free_bits` nats contributes the constant `free_bits` instead, so it gets
  no gradient pushing it to the prior. The batch mean of the result equals
  sum_d max(mean_b KL[b, d], free_bits). `free_bits` may be a traced scalar
  or a per-dimension [D] array (0 leaves a dimension unfloored).
  """
  if isinstance(free_bits, (int, float)) and free_bits <= 0:
    return jnp.sum(kl_per_dim, axis=-1)
  if mask is None:
    batch_mean = jnp.mean(kl_per_dim, axis=0)
  else:
    w = mask.astype(kl_per_dim.dtype)[:, None]
    batch_mean = jnp.sum(kl_per_dim * w, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
  floored = jnp.where(batch_mean[None, :] < free_bits, free_bits, kl_per_dim)
  return jnp.sum(floored, axis=-1)


def _encode(model, variables, x, latent_mask):
  mean, logvar = model.apply(variables, x, method=model.encode)
  if latent_mask is not None:  # masked dimensions: q(z_d | x) = N(0, 1) = p(z_d), KL 0
    mean, logvar = mean * latent_mask, logvar * latent_mask
  return mean, logvar


def _decode(model, variables, z, latent_mask):
  if latent_mask is not None:  # the decoder never sees masked dimensions
    z = z * latent_mask
  return model.apply(variables, z, method=model.decode)


def importance_log_weights(model, variables, x, key, num_samples, latent_mask=None):
  """The two parts of log w_s = log p(x | z_s) + log p(z_s) - log q(z_s | x), z_s ~ q(z | x).

  Args:
    model: a `vae.families.models.VAE`.
    variables: its Flax variables.
    x: images [B, H, W, C].
    key: PRNG key for the S posterior draws.
    num_samples: S.
    latent_mask: optional [D] 0/1 mask (see `per_example_objective`).

  Returns:
    (log_px [S, B], log_ratio [S, B] = log p(z) - log q(z | x), mean [B, D],
    logvar [B, D]).
  """
  mean, logvar = _encode(model, variables, x, latent_mask)
  z = reparameterize(key, mean, logvar, num_samples)                  # [S, B, D]
  params = _decode(model, variables, z, latent_mask)                  # [S, B, H, W, C]
  log_px = model.likelihood.log_prob(params, x)                      # [S, B]
  log_pz = model.apply(variables, z, method=model.log_prior)
  log_ratio = log_pz - log_normal_diag(z, mean, logvar)
  return log_px, log_ratio, mean, logvar


def per_example_objective(model, variables, x, key, *, beta=1.0, free_bits=0.0,
                          num_samples=1, mask=None, latent_mask=None, estimator='iwae'):
  """The training loss and the reported terms, all per example in nats.

  With num_samples == 1 this is the single-sample ELBO with the analytic KL (the
  prior's closed form, `model.kl_per_dim`):
  loss = -(recon - beta * KL), KL floored by free bits. With num_samples = k > 1
  it is the IWAE bound with k samples (Burda et al. 2015): loss =
  -log mean_s w_s, with beta weighting log p(z) - log q(z | x); with
  estimator='elbo' it is the k-sample average ELBO, -mean_s log w_s (the
  "VAE trained with k samples" of the IWAE paper). For the plain
  autoencoder (`model.deterministic`) the loss is -recon and KL is reported as 0.

  Args:
    model: a `vae.families.models.VAE`.
    variables: Flax variables.
    x: images [B, H, W, C] in [0, 1].
    key: PRNG key for the posterior draws.
    beta: KL weight (a traced scalar is fine).
    free_bits: per-dimension KL floor in nats (single-sample objective only).
    num_samples: k, importance samples per example.
    estimator: 'iwae' or 'elbo', how k > 1 samples are combined in the loss.
    mask: optional [B] validity mask used by free bits' batch average.
    latent_mask: optional [D] 0/1 mask for a model padded to a larger latent
      size: masked dimensions have q = p (zero KL) and are zeroed before the
      decoder, so with the padding weights at zero the loss, its gradient and
      the noise (see `reparameterize`) equal those of the smaller model.

  Other families (a mog or vamp prior, an IAF posterior, two stochastic layers:
  `model.analytic_kl` is False) go through `model.posterior`: each layer's KL is
  analytic where that layer is a diagonal Gaussian with a single-Gaussian prior,
  else the single-draw estimate log q(z | x) - log p(z) at the same draw the
  reconstruction uses (unbiased; `VAE.posterior` says which per layer).

  Returns:
    (loss [B], terms) with terms a dict of [B] arrays: 'recon' (E_q log p(x|z)),
    'kl', 'elbo' (= recon - kl, beta = 1), with two layers 'kl_z1' and 'kl_z2',
    and, with k > 1, 'iwae'.
  """
  if model.deterministic:
    mean, _ = _encode(model, variables, x, latent_mask)
    recon = model.likelihood.log_prob(_decode(model, variables, mean, latent_mask), x)
    zeros = jnp.zeros_like(recon)
    return -recon, {'recon': recon, 'kl': zeros, 'elbo': recon}
  if not model.analytic_kl:
    return _general_objective(model, variables, x, key, beta, num_samples, estimator)
  if num_samples == 1:
    mean, logvar = _encode(model, variables, x, latent_mask)
    z = reparameterize(key, mean, logvar)
    recon = model.likelihood.log_prob(_decode(model, variables, z, latent_mask), x)
    kl_dim = model.kl_per_dim(mean, logvar)  # the prior's closed form (priors.KL_TABLE)
    if free_bits is not None and not (isinstance(free_bits, (int, float)) and free_bits <= 0):
      if latent_mask is not None:  # padded dimensions are not floored: they have no KL
        fb = jnp.where(latent_mask > 0, free_bits, 0.0)
      else:
        fb = free_bits
      kl_reg = free_bits_kl(kl_dim, fb, mask)
    else:
      kl_reg = jnp.sum(kl_dim, axis=-1)
    loss = -(recon - beta * kl_reg)
    kl = jnp.sum(kl_dim, axis=-1)
    return loss, {'recon': recon, 'kl': kl, 'elbo': recon - kl}
  log_px, log_ratio, mean, logvar = importance_log_weights(model, variables, x, key,
                                                           num_samples, latent_mask)
  log_w = log_px + beta * log_ratio
  loss = -(jnp.mean(log_w, axis=0) if estimator == 'elbo' else log_mean_exp(log_w, axis=0))
  recon = jnp.mean(log_px, axis=0)
  kl = jnp.sum(model.kl_per_dim(mean, logvar), axis=-1)
  iwae = log_mean_exp(log_px + log_ratio, axis=0)
  return loss, {'recon': recon, 'kl': kl, 'elbo': recon - kl, 'iwae': iwae}


def _general_objective(model, variables, x, key, beta, num_samples, estimator):
  """`per_example_objective` for the families whose KL is not analytic per dimension."""
  post = model.apply(variables, x, key, None if num_samples == 1 else num_samples,
                     method=model.posterior)
  log_px = model.likelihood.log_prob(model.apply(variables, post['z'], method=model.decode), x)
  layer_kl = {f'kl_z{i + 1}': kl for i, kl in enumerate(post['kl'])} if model.layers > 1 else {}
  if num_samples == 1:
    kl = sum(post['kl'])
    terms = {'recon': log_px, 'kl': kl, 'elbo': log_px - kl, **layer_kl}
    return -(log_px - beta * kl), terms
  log_ratio = post['log_p'] - post['log_q']                          # [S, B]
  log_w = log_px + beta * log_ratio
  loss = -(jnp.mean(log_w, axis=0) if estimator == 'elbo' else log_mean_exp(log_w, axis=0))
  recon = jnp.mean(log_px, axis=0)
  mean_over_draws = lambda v: jnp.mean(v, axis=0) if v.ndim == 2 else v
  kl = sum(mean_over_draws(v) for v in post['kl'])
  layer_kl = {k: mean_over_draws(v) for k, v in layer_kl.items()}
  return loss, {'recon': recon, 'kl': kl, 'elbo': recon - kl,
                'iwae': log_mean_exp(log_px + log_ratio, axis=0), **layer_kl}
