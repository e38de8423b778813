"""The latent space of a trained model, in nats: what the encoder does with a data set and
where the prior's mass falls (the "holes" a plain autoencoder leaves and a VAE should not).

`latent_diagnostics` measures I(x; z), KL(q(z) || p(z)), the prior mass in holes and
nearest-neighbour distances from posterior parameters; `model_latent_diagnostics` does it
for a `vae.load` TrainedModel against its own prior; `latent_summary` is the AE-vs-VAE
comparison's; `project_2d` the plane the figures draw.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vae.families import objectives


def log_aggregate_posterior(z, mean, logvar, chunk=256):
  """log q(z) for the empirical aggregate posterior q(z) = (1/N) sum_n q(z | x_n).

  Args:
    z: [M, D] points.
    mean, logvar: [N, D] posterior parameters of N data points.
    chunk: points per block (memory is chunk x N x D).

  Returns:
    [M] log densities.
  """
  n = mean.shape[0]
  m = z.shape[0]
  pad = (-m) % chunk
  zp = jnp.concatenate([z, jnp.zeros((pad, z.shape[1]), z.dtype)]).reshape(-1, chunk, z.shape[1])

  def block(zc):  # [C, D] -> [C]
    lp = objectives.log_normal_diag(zc[:, None, :], mean[None], logvar[None])  # [C, N]
    return jax.nn.logsumexp(lp, axis=1) - jnp.log(n)

  return jax.lax.map(block, zp).reshape(-1)[:m]


def nearest_distances(a, b, exclude_self=False, chunk=256):
  """Euclidean distance from each row of a [M, D] to its nearest row of b [N, D]."""
  m = a.shape[0]
  pad = (-m) % chunk
  ap = jnp.concatenate([a, jnp.zeros((pad, a.shape[1]), a.dtype)]).reshape(-1, chunk, a.shape[1])
  offsets = jnp.arange(ap.shape[0]) * chunk

  def block(inp):
    ac, off = inp
    d2 = jnp.sum(jnp.square(ac[:, None, :] - b[None]), axis=-1)  # [C, N]
    if exclude_self:
      rows = off + jnp.arange(chunk)
      d2 = jnp.where(rows[:, None] == jnp.arange(b.shape[0])[None], jnp.inf, d2)
    return jnp.sqrt(jnp.min(d2, axis=1))

  return jax.lax.map(block, (ap, offsets)).reshape(-1)[:m]


def latent_diagnostics(mean, logvar, key, deterministic=False, num_prior=2000,
                       hole_ratio=0.01, prior=None, densities=True):
  """What the encoder does with the data set, in nats, and where the prior's mass falls.

  For a VAE, with q(z) the empirical aggregate posterior and z_n ~ q(z | x_n):
    avg_kl       mean_n KL(q(z | x_n) || p(z)), analytic;
    mutual_info  I_q(x; z) = mean_n [log q(z_n | x_n) - log q(z_n)];
    marginal_kl  KL(q(z) || p(z)) = mean_n [log q(z_n) - log p(z_n)];
    so mutual_info + marginal_kl is a Monte Carlo estimate of avg_kl
    (Hoffman & Johnson 2016), reported as mc_avg_kl.
  Holes: for z ~ p(z), prior_hole_fraction is the share of prior samples where
  q(z) < hole_ratio * p(z) (prior mass where no encoded data lies) and
  reverse_kl is KL(p(z) || q(z)). For both VAE and autoencoder, from the
  posterior means alone: prior_nn_distance is the median distance from a prior
  sample to the nearest encoded point, data_nn_distance the median distance
  between neighbouring encoded points; their ratio is >> 1 when prior samples
  land in empty regions of the latent space.

  Args:
    mean, logvar: [N, D] posterior parameters of a data set.
    key: PRNG key.
    deterministic: True for an autoencoder (no posterior spread: only the
      distance-based measures apply).
    num_prior: prior samples for the hole measures.
    hole_ratio: density ratio below which a prior sample is in a hole.
    prior: None for N(0, I), or (sample(key, n) -> [n, D], log_prob(z) -> [...],
      kl_per_dim(mean, logvar) or None) of the model's prior (`TrainedModel.sample_prior`,
      `log_prior`, the closed-form KL where `priors.KL_TABLE` has one): samples and log p(z)
      come from it, and avg_kl is the closed form or else the single-draw estimate
      mean_n [log q(z_n | x_n) - log p(z_n)].
    densities: False where q(z | x) is not the Gaussian (mean, logvar) (an IAF
      posterior): only the distance-based measures are reported.

  Returns:
    dict of floats.
  """
  k_post, k_prior = jax.random.split(key)
  if prior is None:
    z_prior = jax.random.normal(k_prior, (num_prior, mean.shape[1]))
    log_p, kl_per_dim = objectives.log_standard_normal, objectives.gaussian_kl_per_dim
  else:
    sample, log_p, kl_per_dim = prior
    z_prior = sample(k_prior, num_prior)
  prior_nn = nearest_distances(z_prior, mean)
  data_nn = nearest_distances(mean, mean, exclude_self=True)
  out = {'prior_nn_distance': float(jnp.median(prior_nn)),
         'data_nn_distance': float(jnp.median(data_nn))}
  out['nn_distance_ratio'] = out['prior_nn_distance'] / max(out['data_nn_distance'], 1e-12)
  out['latent_mean_norm'] = float(jnp.mean(jnp.linalg.norm(mean, axis=1)))
  if deterministic or not densities:
    return out
  z = objectives.reparameterize(k_post, mean, logvar)
  log_q_cond = objectives.log_normal_diag(z, mean, logvar)
  log_qz = log_aggregate_posterior(z, mean, logvar)
  log_pz = log_p(z)
  log_q_prior = log_aggregate_posterior(z_prior, mean, logvar)
  log_p_prior = log_p(z_prior)
  avg_kl = (jnp.sum(kl_per_dim(mean, logvar), axis=-1) if kl_per_dim is not None
            else log_q_cond - log_pz)
  out.update(
      avg_kl=float(jnp.mean(avg_kl)),
      mutual_info=float(jnp.mean(log_q_cond - log_qz)),
      marginal_kl=float(jnp.mean(log_qz - log_pz)),
      reverse_kl=float(jnp.mean(log_p_prior - log_q_prior)),
      prior_hole_fraction=float(jnp.mean(log_q_prior - log_p_prior < jnp.log(hole_ratio))))
  out['mc_avg_kl'] = out['mutual_info'] + out['marginal_kl']
  out['mutual_info_upper_bound'] = float(jnp.log(mean.shape[0]))  # I <= log N for N points
  return out


def model_latent_diagnostics(model, mean, logvar, key):
  """`latent_diagnostics` of a TrainedModel's top stochastic layer against its own prior.

  `mean`, `logvar` are `model.encode`'s [N, total_latent_dim]; with two layers the
  z2 half is measured (the prior lives there). For an IAF posterior only the
  distance measures are reported (the flow's aggregate density is not tractable).
  """
  vae_model = model.model
  d = vae_model.latent_dim
  if vae_model.layers == 2:
    mean, logvar = mean[:, d:], logvar[:, d:]
  prior = (lambda k, n: model.sample_prior(k, n), model.log_prior, vae_model.kl_per_dim)
  return latent_diagnostics(mean, logvar, key, deterministic=vae_model.deterministic,
                            prior=prior, densities=vae_model.flow is None)


def project_2d(points):
  """First two principal axes (orthonormal, so N(0, I) stays N(0, I) in the plane)."""
  if points.shape[1] <= 2:
    return points, np.eye(points.shape[1])
  centred = points - points.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  basis = vt[:2].T
  return points @ basis, basis


def latent_summary(model, images, labels, key, num_samples=64):
  """A trained model's latent diagnostics on uint8 `images` (the AE-vs-VAE comparison).

  Args:
    model: a `vae.load` TrainedModel (a VAE or its deterministic autoencoder twin).
    images, labels: evaluation images (uint8) and their labels.
    key: PRNG key for the diagnostics and the prior samples.
    num_samples: prior samples to decode.

  Returns:
    (diagnostics dict with test_elbo or test_recon in nats per example,
     posterior means [N, D], decoded prior samples [S, H, W, C]).
  """
  x = model.to_float(images)
  mean, logvar = model.encode(x)
  diag = model_latent_diagnostics(model, mean, logvar, key)
  # For the autoencoder the per-example objective's "elbo" is its reconstruction term.
  score = float(np.mean(np.asarray(model.elbo(x))))
  diag['test_recon' if model.model.deterministic else 'test_elbo'] = score
  samples = np.asarray(model.sample(jax.random.fold_in(key, 1), num_samples))
  return diag, np.asarray(mean), samples


