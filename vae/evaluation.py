"""Evaluation: masked ELBO sums, importance-weighted log-likelihood, active units.

All results are in nats per example (log-likelihood bounds: higher is better).
Evaluation data arrives padded to whole batches with a validity mask
(`input_pipeline.pad_to_batches`), so every example counts exactly once, and
every random draw comes from a fixed key, so numbers are deterministic.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae import input_pipeline, objectives
from vae.likelihoods import bits_per_dim


def iw_log_likelihood(model, variables, x, key, num_samples, chunk_size,
                      report_at: Sequence[int] = ()):
  """log p(x) estimated with `num_samples` importance samples from q(z | x), per example.

  log p(x) ~= log (1/S) sum_s p(x, z_s) / q(z_s | x). The samples are drawn
  `chunk_size` at a time and folded into a running log-sum-exp, so memory is
  bounded by chunk_size x batch whatever S is. Estimates at smaller sample
  counts (`report_at`) reuse the first k of the same samples.

  Args:
    model, variables: the VAE and its variables.
    x: [B, H, W, C] floats.
    key: PRNG key; chunk c uses fold_in(key, c).
    num_samples: S.
    chunk_size: samples per chunk.
    report_at: extra sample counts k <= S to report.

  Returns:
    [len(report_at) + 1, B]: the estimates at each k in report_at, then at S.
  """
  ks = jnp.asarray(list(report_at) + [num_samples], jnp.int32)
  num_chunks = -(-num_samples // chunk_size)
  mean, logvar = model.apply(variables, x, method=model.encode)

  def body(acc, c):
    z = objectives.reparameterize(jax.random.fold_in(key, c), mean, logvar, chunk_size)
    params = model.apply(variables, z, method=model.decode)
    log_w = (model.likelihood.log_prob(params, x) + objectives.log_standard_normal(z)
             - objectives.log_normal_diag(z, mean, logvar))          # [C, B]
    index = c * chunk_size + jnp.arange(chunk_size)                 # global sample ids
    keep = index[None, :] < ks[:, None]                             # [K, C]
    masked = jnp.where(keep[:, :, None], log_w[None], -jnp.inf)    # [K, C, B]
    return jnp.logaddexp(acc, jax.nn.logsumexp(masked, axis=1)), None

  init = jnp.full((len(ks), x.shape[0]), -jnp.inf)
  acc, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return acc - jnp.log(ks.astype(jnp.float32))[:, None]


def make_eval_fn(model, mode, iw_samples=0, iw_chunk=100):
  """Builds eval_fn(params, batches, mask, key) -> dict of sums over valid examples.

  Args:
    model: the VAE.
    mode: `input_pipeline` conversion mode for the stored uint8 images.
    iw_samples: if > 0, also sums an importance-weighted log-likelihood with
      this many samples.
    iw_chunk: samples per chunk for that estimate.

  Returns:
    A function (jit it) of params, batches [nb, B, H, W, C] uint8, mask [nb, B]
    and a key, returning sums: count, elbo, recon, kl, kl_dim [D],
    z_mean_sum [D], z_mean_sq_sum [D] and, with iw_samples, iw_ll.
  """
  def eval_fn(params, batches, mask, key):
    variables = {'params': params}

    def body(sums, inp):
      xb, mb, i = inp
      k_data, k_z, k_iw = jax.random.split(jax.random.fold_in(key, i), 3)
      x = input_pipeline.to_float(xb, mode, k_data)
      w = mb.astype(jnp.float32)
      _, terms = objectives.per_example_objective(model, variables, x, k_z)
      mean, logvar = model.apply(variables, x, method=model.encode)
      kl_dim = (jnp.zeros_like(mean) if model.deterministic
                else objectives.gaussian_kl_per_dim(mean, logvar))
      new = {
          'count': jnp.sum(w),
          'elbo': jnp.sum(w * terms['elbo']),
          'recon': jnp.sum(w * terms['recon']),
          'kl': jnp.sum(w * terms['kl']),
          'kl_dim': jnp.sum(w[:, None] * kl_dim, axis=0),
          'z_mean_sum': jnp.sum(w[:, None] * mean, axis=0),
          'z_mean_sq_sum': jnp.sum(w[:, None] * jnp.square(mean), axis=0),
      }
      if iw_samples:
        ll = iw_log_likelihood(model, variables, x, k_iw, iw_samples,
                               min(iw_chunk, iw_samples))[-1]
        new['iw_ll'] = jnp.sum(w * ll)
      return jax.tree.map(jnp.add, sums, new), None

    d = model.latent_dim
    init = {'count': 0.0, 'elbo': 0.0, 'recon': 0.0, 'kl': 0.0,
            'kl_dim': jnp.zeros(d), 'z_mean_sum': jnp.zeros(d), 'z_mean_sq_sum': jnp.zeros(d)}
    if iw_samples:
      init['iw_ll'] = 0.0
    init = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init)
    sums, _ = jax.lax.scan(body, init, (batches, mask, jnp.arange(batches.shape[0])))
    return sums

  return eval_fn


def active_units(z_mean_sum, z_mean_sq_sum, count, threshold=0.01):
  """Dimensions whose posterior mean varies over x by more than `threshold`.

  Returns:
    (number active, per-dimension variance of E_q[z] over the data) as numpy.
  """
  mean = np.asarray(z_mean_sum) / count
  var = np.asarray(z_mean_sq_sum) / count - mean ** 2
  return int(np.sum(var > threshold)), var


def summarize_sums(sums, num_dims, prefix, active_threshold=0.01):
  """Turns eval sums into named per-example metrics (nats; bits/dim)."""
  sums = jax.device_get(sums)
  n = float(sums['count'])
  out = {f'{prefix}/elbo': float(sums['elbo']) / n,
         f'{prefix}/recon': float(sums['recon']) / n,
         f'{prefix}/kl': float(sums['kl']) / n,
         f'{prefix}/count': int(round(n))}
  out[f'{prefix}/bpd'] = float(bits_per_dim(-out[f'{prefix}/elbo'], num_dims))
  num_active, _ = active_units(sums['z_mean_sum'], sums['z_mean_sq_sum'], n, active_threshold)
  out[f'{prefix}/active_units'] = num_active
  if 'iw_ll' in sums:
    out[f'{prefix}/iw_ll'] = float(sums['iw_ll']) / n
    out[f'{prefix}/iw_nll'] = -out[f'{prefix}/iw_ll']
  return out

