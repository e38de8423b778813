"""What every evaluation computes: per-example terms (`example_terms`), their masked sums in
training's compiled evaluation (`make_eval_fn`, registered `EvalSum`s), the
importance-weighted log-likelihood and active units. The offline report built on them is
vae/evaluation/report.py.

All results are in nats per example (log-likelihood bounds: higher is better).
Evaluation data arrives padded to whole batches with a validity mask
(`input_pipeline.pad_to_batches`), so every example counts exactly once, and
every random draw comes from a fixed key, so numbers are deterministic.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae.data import input_pipeline
from vae.families import objectives
from vae.families.likelihoods import bits_per_dim


@dataclasses.dataclass(frozen=True)
class IWOptions:
  """How the importance-sampling estimator computes (never what: the draws, and so the
  estimate, do not depend on them, up to float32 rounding).

  Attributes:
    decode_rows_cpu: rows (samples x examples) per decoder call on the CPU: a chunk's draws
      are decoded in tiles of at most this many rows, so that the logits [rows, pixels]
      stay in cache while they are scored (about 10 % faster than whole 50,000-row chunks,
      docs/benchmarks.md); accelerators decode whole chunks.
    grouped_logs: the Bernoulli scores use one log per group of pixels
      (`likelihoods.bernoulli_log_prob_sum`, one fused pass); False: the per-pixel sum of
      training's loss (scripts/benchmark.py's "before").
  """
  decode_rows_cpu: int = 4096
  grouped_logs: bool = True


def iw_log_likelihood(model, variables, x, key, num_samples, chunk_size,
                      report_at: Sequence[int] = (), latent_mask=None, options=IWOptions()):
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
    latent_mask: optional [D] mask of a padded model (objectives.per_example_objective).
    options: how it computes (`IWOptions`).

  Returns:
    [len(report_at) + 1, B]: the estimates at each k in report_at, then at S.
  """
  ks = jnp.asarray(list(report_at) + [num_samples], jnp.int32)
  num_chunks = -(-num_samples // chunk_size)
  if model.analytic_kl:  # the encoder runs once; each chunk draws and decodes
    mean, logvar = model.apply(variables, x, method=model.encode)
    if latent_mask is not None:
      mean, logvar = mean * latent_mask, logvar * latent_mask

  def log_px(z):
    """log p(x | z) of draws z [C, B, D]: [C, B], decoded in tiles of whole sample rows."""
    def score(z):
      if latent_mask is not None:
        z = z * latent_mask
      return model.likelihood.log_prob(model.apply(variables, z, method=model.decode), x,
                                       grouped_logs=options.grouped_logs)
    tile = _decode_tile(chunk_size, x.shape[0], options.decode_rows_cpu)
    if tile == chunk_size:
      return score(z)
    tiles = z.reshape((chunk_size // tile, tile) + z.shape[1:])
    return jax.lax.map(score, tiles).reshape(z.shape[:2])

  def chunk_log_weights(k):
    """log p(x, z) - log q(z | x) for `chunk_size` draws: [C, B]."""
    if not model.analytic_kl:  # flows, mixtures and two layers: through `model.posterior`
      post = model.apply(variables, x, k, chunk_size, method=model.posterior)
      return log_px(post['z']) + post['log_p'] - post['log_q']
    z = objectives.reparameterize(k, mean, logvar, chunk_size)
    return (log_px(z) + model.apply(variables, z, method=model.log_prior)
            - objectives.log_normal_diag(z, mean, logvar))

  def body(acc, c):
    log_w = chunk_log_weights(jax.random.fold_in(key, c))          # [C, B]
    index = c * chunk_size + jnp.arange(chunk_size)                 # global sample ids
    keep = index[None, :] < ks[:, None]                             # [K, C]
    masked = jnp.where(keep[:, :, None], log_w[None], -jnp.inf)    # [K, C, B]
    return jnp.logaddexp(acc, jax.nn.logsumexp(masked, axis=1)), None

  init = jnp.full((len(ks), x.shape[0]), -jnp.inf)
  acc, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  return acc - jnp.log(ks.astype(jnp.float32))[:, None]


def _decode_tile(chunk_size, batch, decode_rows_cpu):
  """Samples per decoder call: the whole chunk off the CPU; on it the largest divisor t of
  chunk_size with t * batch <= decode_rows_cpu (at least 1)."""
  if jax.default_backend() != 'cpu':
    return chunk_size
  fits = [t for t in range(1, chunk_size + 1)
          if chunk_size % t == 0 and t * batch <= decode_rows_cpu]
  return max(fits, default=1)


@dataclasses.dataclass(frozen=True)
class EvalSum:
  """A per-example quantity that evaluation sums over a split (`register_eval_sum`).

  Attributes:
    name: the key of its sum.
    fn: (model, variables, x, mean, logvar, terms) -> [B] or, with `latent_axis`, [B, L]
      (mean, logvar: `VAE.encode`'s [B, L], masked for a padded member; terms: the
      per-example objective's terms).
    latent_axis: one value per latent dimension: a member padded to a larger latent size in
      a vmapped group has its sum cut to its own dimensions (`latent_axis_sums`).
    applies: which models compute it (default: all).
    summarize: (sum, count, split) -> {metric name: value} for metrics.jsonl, or None.
  """
  name: str
  fn: Callable
  latent_axis: bool = False
  applies: Callable = lambda model: True
  summarize: Optional[Callable] = None


EVAL_SUMS = {}


def register_eval_sum(eval_sum):
  """Adds an EvalSum to every evaluation built after this call (training's and
  `scripts/evaluate.py`'s compiled evaluation)."""
  EVAL_SUMS[eval_sum.name] = eval_sum
  return eval_sum


def latent_axis_sums():
  """Names of the evaluation sums that have a latent axis, as their producers declare."""
  return {'z_mean_sum', 'z_mean_sq_sum'} | {n for n, e in EVAL_SUMS.items() if e.latent_axis}


def _kl_per_dimension(model, variables, x, mean, logvar, terms):  # pylint: disable=unused-argument
  return jnp.zeros_like(mean) if model.deterministic else objectives.gaussian_kl_per_dim(
      mean, logvar)


# The per-dimension KL exists only for the analytic family.
register_eval_sum(EvalSum('kl_dim', _kl_per_dimension, latent_axis=True,
                          applies=lambda model: model.analytic_kl))


def example_terms(model, variables, x, k_z, k_iw=None, iw_samples=0, iw_chunk=100,
                  report_at: Sequence[int] = (), latent_mask=None, iw_options=IWOptions()):
  """What evaluation computes per example of a batch x [B, H, W, C] (floats): the one path of
  training's evaluation (`make_eval_fn` sums it) and `scripts/evaluate.py`
  (`report.evaluate_model` keeps it per image).

  Returns:
    dict of [B] arrays (nats per example): elbo, recon, kl (and kl_z1, kl_z2 with two
    layers); mean and logvar [B, L] (`VAE.encode`, masked for a padded member); iw
    [len(report_at) + 1, B] with `iw_samples` (`iw_log_likelihood` with key `k_iw`); and
    every registered `EvalSum` that applies to the model ([B] or [B, L]).
  """
  _, terms = objectives.per_example_objective(model, variables, x, k_z, latent_mask=latent_mask)
  mean, logvar = model.apply(variables, x, method=model.encode)
  if latent_mask is not None:
    mean, logvar = mean * latent_mask, logvar * latent_mask
  out = {k: terms[k] for k in ('elbo', 'recon', 'kl', 'kl_z1', 'kl_z2') if k in terms}
  out.update(mean=mean, logvar=logvar)
  for extra in EVAL_SUMS.values():
    if extra.applies(model):
      out[extra.name] = extra.fn(model, variables, x, mean, logvar, terms)
  if iw_samples:
    out['iw'] = iw_log_likelihood(model, variables, x, k_iw, iw_samples,
                                  min(iw_chunk, iw_samples), report_at, latent_mask=latent_mask,
                                  options=iw_options)
  return out


def make_eval_fn(model, mode, iw_samples=0, iw_chunk=100, num_train=0, iw_options=IWOptions()):
  """Builds eval_fn(params, batches, mask, key) -> dict of sums over valid examples.

  Args:
    model: the VAE.
    mode: `input_pipeline` conversion mode for the stored uint8 images.
    iw_samples: if > 0, also sums an importance-weighted log-likelihood with
      this many samples.
    iw_chunk: samples per chunk for that estimate.
    iw_options: how that estimate computes (`IWOptions`).
    num_train: N, the training examples: for a prior that needs the training set
      (`priors.Prior.eval_variables`), eval_fn's `train_data` [>= N, H, W, C] uint8.

  Returns:
    A function (jit it) of params, batches [nb, B, H, W, C] uint8, mask [nb, B],
    a key and an optional latent mask [D], returning sums: count, elbo, recon,
    kl, z_mean_sum [L], z_mean_sq_sum [L] (L = model.total_latent_dim; the means of
    `VAE.encode`), kl_z1 and kl_z2 (two layers), with iw_samples iw_ll, and every
    registered `EvalSum` that applies to the model (kl_dim [L]: the analytic family).
  """
  extras = [e for e in EVAL_SUMS.values() if e.applies(model)]

  def eval_fn(params, batches, mask, key, latent_mask=None, train_data=None, prior_state=None):
    variables = {'params': params}
    variables.update(model.prior.eval_variables(model, params, prior_state, train_data,
                                                num_train))

    def body(sums, inp):
      xb, mb, i = inp
      k_data, k_z, k_iw = jax.random.split(jax.random.fold_in(key, i), 3)
      x = input_pipeline.to_float(xb, mode, k_data)
      w = mb.astype(jnp.float32)
      t = example_terms(model, variables, x, k_z, k_iw, iw_samples, iw_chunk,
                        latent_mask=latent_mask, iw_options=iw_options)
      new = {'count': jnp.sum(w), 'z_mean_sum': jnp.sum(w[:, None] * t['mean'], axis=0),
             'z_mean_sq_sum': jnp.sum(w[:, None] * jnp.square(t['mean']), axis=0)}
      for name in ('elbo', 'recon', 'kl', 'kl_z1', 'kl_z2'):
        if name in t:
          new[name] = jnp.sum(w * t[name])
      for extra in extras:
        new[extra.name] = jnp.sum((w[:, None] if extra.latent_axis else w) * t[extra.name],
                                  axis=0)
      if iw_samples:
        new['iw_ll'] = jnp.sum(w * t['iw'][-1])
      return jax.tree.map(jnp.add, sums, new), None

    d = model.total_latent_dim
    init = {'count': 0.0, 'elbo': 0.0, 'recon': 0.0, 'kl': 0.0,
            'z_mean_sum': jnp.zeros(d), 'z_mean_sq_sum': jnp.zeros(d)}
    for extra in extras:
      init[extra.name] = jnp.zeros(d) if extra.latent_axis else 0.0
    if model.layers == 2:
      init.update(kl_z1=0.0, kl_z2=0.0)
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


def summarize_sums(sums, num_dims, prefix, active_threshold=0.01, bpd_offset=0.0):
  """Turns eval sums into named per-example metrics (nats; bits/dim by the likelihood's
  protocol, `likelihoods.bpd_offset`: none when it is None). With two stochastic
  layers (sums hold kl_z1) also kl_z1, kl_z2 and active_units_z1, active_units_z2 (the
  first half of the latent vector is z1)."""
  sums = jax.device_get(sums)
  n = float(sums['count'])
  out = {f'{prefix}/elbo': float(sums['elbo']) / n,
         f'{prefix}/recon': float(sums['recon']) / n,
         f'{prefix}/kl': float(sums['kl']) / n,
         f'{prefix}/count': int(round(n))}
  if bpd_offset is not None:
    out[f'{prefix}/bpd'] = float(bits_per_dim(-out[f'{prefix}/elbo'], num_dims, bpd_offset))
  num_active, var = active_units(sums['z_mean_sum'], sums['z_mean_sq_sum'], n,
                                 active_threshold)
  out[f'{prefix}/active_units'] = num_active
  if 'kl_z1' in sums:
    half = len(var) // 2
    for i, part in enumerate((var[:half], var[half:])):
      out[f'{prefix}/kl_z{i + 1}'] = float(sums[f'kl_z{i + 1}']) / n
      out[f'{prefix}/active_units_z{i + 1}'] = int(np.sum(part > active_threshold))
  if 'iw_ll' in sums:
    out[f'{prefix}/iw_ll'] = float(sums['iw_ll']) / n
    out[f'{prefix}/iw_nll'] = -out[f'{prefix}/iw_ll']
  for name, extra in EVAL_SUMS.items():
    if name in sums and extra.summarize is not None:
      out.update(extra.summarize(np.asarray(sums[name]), n, prefix))
  return out
