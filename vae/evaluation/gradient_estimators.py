"""Gradient estimators for the encoder: reparameterization vs score function (REINFORCE).

The quantity: the gradient, with respect to the encoder's parameters phi, of
the reconstruction term R(phi) = E_{q_phi(z|x)} [log p(x | z)] averaged over a
batch (the KL term has an analytic gradient and is the same for every
estimator, so it is left out). Estimators with S samples per example:

  pathwise   (1/S) sum_s d/dphi log p(x | mean + sigma * eps_s): the
             reparameterization gradient; eps_s does not depend on phi.
  score      (1/S) sum_s log p(x | z_s) d/dphi log q_phi(z_s | x), z_s drawn
             and held fixed: REINFORCE, unbiased but noisy.
  score_loo  the same with a leave-one-out baseline: (f_s - mean_{s' != s} f_s')
             replaces f_s (needs S >= 2); still unbiased.
  sampled    z drawn without reparameterization (stop_gradient through the
             draw) and R differentiated as if z were data: the encoder gets
             exactly zero gradient. This is why a "sampling layer" alone cannot
             train a VAE.
"""

import jax
import jax.numpy as jnp

from vae.families import objectives
from vae.training.progress import Progress

ESTIMATORS = ('pathwise', 'score', 'score_loo', 'sampled')


def _split(params):
  return params['encoder'], {k: v for k, v in params.items() if k != 'encoder'}


def _join(encoder, rest):
  return {'encoder': encoder, **rest}


def recon_samples(model, params, x, z):
  """log p(x | z) for z [S, B, D]: [S, B]."""
  return model.likelihood.log_prob(model.apply({'params': params}, z, method=model.decode), x)


def encoder_gradient(model, params, x, key, num_samples, estimator):
  """One estimate of dR/dphi (a pytree shaped like params['encoder']).

  Args:
    model: a `vae.families.models.VAE`.
    params: its parameters.
    x: [B, H, W, C] images.
    key: PRNG key for the S draws.
    num_samples: S samples per example.
    estimator: one of ESTIMATORS.
  """
  enc, rest = _split(params)

  if estimator == 'pathwise':
    def r(e):
      p = _join(e, rest)
      mean, logvar = model.apply({'params': p}, x, method=model.encode)
      z = objectives.reparameterize(key, mean, logvar, num_samples)
      return jnp.mean(recon_samples(model, p, x, z))
    return jax.grad(r)(enc)

  if estimator == 'sampled':
    def r(e):
      p = _join(e, rest)
      mean, logvar = model.apply({'params': p}, x, method=model.encode)
      z = jax.lax.stop_gradient(objectives.reparameterize(key, mean, logvar, num_samples))
      return jnp.mean(recon_samples(model, p, x, z))
    return jax.grad(r)(enc)

  if estimator not in ('score', 'score_loo'):
    raise ValueError(f'unknown estimator {estimator!r}; choose one of {ESTIMATORS}')
  mean, logvar = model.apply({'params': params}, x, method=model.encode)
  z = jax.lax.stop_gradient(objectives.reparameterize(key, mean, logvar, num_samples))
  f = jax.lax.stop_gradient(recon_samples(model, params, x, z))      # [S, B]
  if estimator == 'score_loo':
    if num_samples < 2:
      raise ValueError('score_loo needs num_samples >= 2')
    f = f - (jnp.sum(f, axis=0, keepdims=True) - f) / (num_samples - 1)

  def surrogate(e):
    m, lv = model.apply({'params': _join(e, rest)}, x, method=model.encode)
    log_q = objectives.log_normal_diag(z, m, lv)                      # [S, B]
    return jnp.mean(f * log_q)
  return jax.grad(surrogate)(enc)


def flatten(tree):
  return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def estimator_statistics(model, params, x, key, num_samples, estimator, repeats, reference):
  """Variance and cosine similarity to `reference` over `repeats` independent estimates.

  Returns:
    dict with 'total_variance' (E ||g - E g||^2, summed over parameters),
    'cosine' (mean cosine similarity to the reference), 'bias_norm' (||mean g -
    reference||) and 'mean_norm'.
  """
  fn = jax.jit(jax.vmap(lambda k: flatten(encoder_gradient(model, params, x, k, num_samples,
                                                           estimator))))
  grads = fn(jax.random.split(key, repeats))                          # [R, P]
  mean = jnp.mean(grads, axis=0)
  cos = grads @ reference / (jnp.linalg.norm(grads, axis=1) * jnp.linalg.norm(reference) + 1e-30)
  return {'total_variance': float(jnp.sum(jnp.var(grads, axis=0))),
          'cosine': float(jnp.mean(cos)),
          'bias_norm': float(jnp.linalg.norm(mean - reference)),
          'mean_norm': float(jnp.linalg.norm(mean))}


def study(model, params, x, sample_counts, repeats, reference_samples, seed=0):
  key = jax.random.key(seed)
  reference = flatten(jax.jit(lambda k: encoder_gradient(
      model, params, x, k, reference_samples, 'pathwise'))(jax.random.fold_in(key, 0)))
  results = {'reference_norm': float(jnp.linalg.norm(reference)), 'estimators': {}}
  cells = [(est, s) for est in ('pathwise', 'score', 'score_loo') for s in sample_counts
           if not (est == 'score_loo' and s < 2)]
  progress = Progress(len(cells), 'gradient study (estimator x S)', min_interval_s=0.0)
  for est in ('pathwise', 'score', 'score_loo'):
    rows = []
    for s in sample_counts:
      if (est, s) not in cells:
        continue
      stats = estimator_statistics(model, params, x, jax.random.fold_in(key, s), s, est,
                                      repeats, reference)
      rows.append({'samples': s, **stats})
      progress.update(cells.index((est, s)) + 1, estimator=est, S=s)
    results['estimators'][est] = rows
  progress.close()
  sampled = encoder_gradient(model, params, x, jax.random.fold_in(key, 7), 10, 'sampled')
  results['sampled_without_reparameterization_grad_norm'] = float(
      jnp.linalg.norm(flatten(sampled)))
  return results
