"""Tests of vae/families/priors.py: the mixture density, the MoG prior at N(0, I), the VampPrior."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from tests import exact_families
from vae.training import estimates
from vae.families import exemplar, models, objectives, priors


def _log_normal_diag64(z, mean, logvar):
  return -0.5 * np.sum(np.log(2 * np.pi) + logvar + (z - mean) ** 2 / np.exp(logvar), axis=-1)


def test_mixture_log_prob_equals_the_direct_sum_over_components():
  rng = np.random.default_rng(0)
  k, d = 7, 4
  log_w = np.log(rng.dirichlet(np.ones(k)))
  means, logvars = rng.normal(size=(k, d)), rng.uniform(-2, 1, (k, d))
  z = rng.normal(size=(3, 5, d)) * 2
  direct = np.logaddexp.reduce(log_w + _log_normal_diag64(z[..., None, :], means, logvars),
                               axis=-1)
  got = priors.mixture_log_prob(*(jnp.asarray(a, jnp.float32) for a in (z, log_w, means, logvars)))
  np.testing.assert_allclose(np.asarray(got), direct, rtol=1e-5, atol=1e-4)


def _config(**model):
  c = default.get_config()
  with c.unlocked():
    c.model.hidden = (32,)
    c.model.latent_dim = 3
    for k, v in model.items():
      c.model[k] = v
  return c


def test_one_component_mog_fixed_at_the_origin_equals_the_standard_prior():
  std = models.build_model(_config().model, (28, 28, 1))
  mog = models.build_model(_config(prior='mog', prior_components=1).model, (28, 28, 1))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (16, 28, 28, 1)).astype(jnp.float32)
  params = std.init(jax.random.key(1), x[:1], jax.random.key(2))['params']
  mog_params = dict(params, prior={'means': jnp.zeros((1, 3)), 'logvars': jnp.zeros((1, 3)),
                                   'logits': jnp.zeros((1,))})
  z = jax.random.normal(jax.random.key(3), (100, 3)) * 3
  log_p = mog.apply({'params': mog_params}, z, method=mog.log_prior)
  np.testing.assert_allclose(np.asarray(log_p), np.asarray(objectives.log_standard_normal(z)),
                             rtol=1e-6, atol=1e-5)
  # The same draws give the same importance weights, so the same log p(x) estimate...
  iw = lambda m, p: jax.jit(lambda q: estimates.iw_log_likelihood(
      m, {'params': q}, x, jax.random.key(4), 64, 16, report_at=(1,)))(p)
  np.testing.assert_allclose(np.asarray(iw(mog, mog_params)), np.asarray(iw(std, params)),
                             rtol=1e-5)
  # ... and the single-draw KL estimate averages to the analytic KL.
  kl_mc = jax.jit(jax.vmap(lambda k: objectives.per_example_objective(
      mog, {'params': mog_params}, x, k)[1]['kl']))(jax.random.split(jax.random.key(5), 200))
  kl_exact = objectives.per_example_objective(std, {'params': params}, x,
                                              jax.random.key(5))[1]['kl']
  se = np.asarray(kl_mc).std(0) / np.sqrt(200)
  assert np.all(np.abs(np.asarray(kl_mc).mean(0) - np.asarray(kl_exact)) < 4 * se + 1e-4)


def test_vamp_log_density_is_the_log_mean_exp_of_the_posteriors_at_the_pseudo_inputs():
  model = models.build_model(_config(prior='vamp', prior_components=6).model, (28, 28, 1))
  x = jnp.zeros((1, 28, 28, 1))
  params = model.init(jax.random.key(0), x, jax.random.key(1))['params']
  # Some free pseudo-input values outside [0, 1]: the hard-tanh clips them.
  raw = jax.random.uniform(jax.random.key(2), (6, 28, 28, 1), minval=-0.5, maxval=1.5)
  params = dict(params, prior={'pseudo_inputs': raw})
  u = np.clip(np.asarray(raw), 0.0, 1.0)
  mean_u, logvar_u = (np.asarray(a, np.float64) for a in model.apply(
      {'params': params}, jnp.asarray(u), method=model.encode))
  z = np.asarray(jax.random.normal(jax.random.key(3), (50, 3)), np.float64) * 2
  direct = (np.logaddexp.reduce(_log_normal_diag64(z[:, None, :], mean_u, logvar_u), axis=-1)
            - np.log(6))
  comps = model.apply({'params': params}, method=model.prior_components)
  got = model.apply({'params': params}, jnp.asarray(z, jnp.float32), method=model.log_prior)
  np.testing.assert_allclose(np.asarray(got), direct, rtol=1e-5, atol=1e-4)
  log_w, means, _ = comps
  np.testing.assert_allclose(np.asarray(log_w), -np.log(6) * np.ones(6), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(means), mean_u, rtol=1e-5, atol=1e-5)


def test_vamp_pseudo_inputs_start_near_0_05_and_learn():
  model = models.build_model(_config(prior='vamp', prior_components=4).model, (28, 28, 1))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (8, 28, 28, 1)).astype(jnp.float32)
  params = model.init(jax.random.key(1), x[:1], jax.random.key(2))['params']
  u = np.asarray(params['prior']['pseudo_inputs'])
  assert u.shape == (4, 28, 28, 1) and abs(u.mean() - 0.05) < 0.005 and 0.005 < u.std() < 0.02
  grads = jax.jit(jax.grad(lambda p: jnp.mean(objectives.per_example_objective(
      model, {'params': p}, x, jax.random.key(3))[0])))(params)
  assert float(jnp.abs(grads['prior']['pseudo_inputs']).sum()) > 0


def test_mixture_weights_are_normalized_whatever_the_logits():
  """The mixture prior's weights are a softmax of free logits: they sum to 1 (log 0) for any
  logits, so log p(z) is a density and not off by a constant."""
  model, params, _, _ = exact_families.one_layer('mog', d=2)
  params = dict(params, prior=dict(params['prior'], logits=jnp.array([3.0, 1.0, -2.0])))
  log_w, _, _ = model.apply({'params': params}, method=model.prior_components)
  np.testing.assert_allclose(float(jax.nn.logsumexp(log_w)), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.exp(log_w), jax.nn.softmax(jnp.array([3.0, 1.0, -2.0])),
                             rtol=1e-6)


def test_mixture_samples_follow_the_component_weights():
  log_w = jnp.log(jnp.array([0.7, 0.2, 0.1]))
  means = jnp.array([[-10.0], [0.0], [10.0]])
  z = priors.sample_mixture(jax.random.key(0), 20000, log_w, means, jnp.zeros((3, 1)))
  share = [float(jnp.mean(jnp.abs(z[:, 0] - m) < 5)) for m in (-10, 0, 10)]
  np.testing.assert_allclose(share, [0.7, 0.2, 0.1], atol=0.015)
  cold = priors.sample_mixture(jax.random.key(0), 100, log_w, means, jnp.zeros((3, 1)), 0.0)
  assert set(np.unique(np.asarray(cold))) <= {-10.0, 0.0, 10.0}


def test_family_samples_come_from_the_chosen_prior():
  """generate() for a MoG prior lands near its components (not around N(0, I))."""
  model, params, _, _ = exact_families.one_layer('mog', d=2)
  _, means, _ = model.apply({'params': params}, method=model.prior_components)
  k = jax.random.key(0)
  z_mix = priors.sample_mixture(k, 5, *model.apply({'params': params},
                                                    method=model.prior_components))
  img = model.apply({'params': params}, k, 5, method=model.generate)
  expected = model.apply({'params': params}, z_mix, method=model.decode_mean)
  np.testing.assert_allclose(np.asarray(img), np.asarray(expected), rtol=1e-6)
  assert means.shape == (3, 2)


def _exemplar_model(d=3, **model):
  return models.build_model(_config(prior='exemplar', latent_dim=d, **model).model, (28, 28, 1))


def test_exemplar_density_is_the_log_mean_exp_over_the_exemplars_in_float64():
  """All N exemplars (evaluation), through the blocked sum over components too."""
  model = _exemplar_model()
  x = jnp.zeros((1, 28, 28, 1))
  params = model.init(jax.random.key(0), x, jax.random.key(1))['params']
  params = dict(params, prior={'log_variance': jnp.float32(-0.7)})
  rng = np.random.default_rng(0)
  means = rng.normal(size=(1000, 3))
  z = rng.normal(size=(4, 6, 3)) * 1.5
  direct = (np.logaddexp.reduce(_log_normal_diag64(z[..., None, :], means, -0.7), axis=-1)
            - np.log(1000))
  variables = dict({'params': params}, **exemplar.exemplar_variables(
      means=jnp.asarray(means, jnp.float32)))
  got = model.apply(variables, jnp.asarray(z, jnp.float32), method=model.log_prior)
  np.testing.assert_allclose(np.asarray(got), direct, rtol=1e-5, atol=1e-4)
  blocked = priors.mixture_log_prob(
      jnp.asarray(z, jnp.float32), jnp.full((1000,), -np.log(1000), jnp.float32),
      jnp.asarray(means, jnp.float32), jnp.full((1000, 3), -0.7, jnp.float32), block=128)
  np.testing.assert_allclose(np.asarray(blocked), direct, rtol=1e-5, atol=1e-4)
  # Training passes images: the prior encodes them with the model's encoder.
  images = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1))
  enc = np.asarray(model.apply({'params': params}, images, method=model.encode)[0], np.float64)
  variables = dict({'params': params}, **exemplar.exemplar_variables(images=images))
  got = model.apply(variables, jnp.asarray(z, jnp.float32), method=model.log_prior)
  direct = (np.logaddexp.reduce(_log_normal_diag64(z[..., None, :], enc, -0.7), axis=-1)
            - np.log(5))
  np.testing.assert_allclose(np.asarray(got), direct, rtol=1e-5, atol=1e-4)


def test_leave_one_out_removes_exactly_the_examples_own_exemplar():
  rng = np.random.default_rng(1)
  n, d = 12, 2
  cache = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  batch_ids = jnp.array([3, 7, 11], jnp.int32)
  ids, log_w = exemplar.retrieve(jax.random.key(0), cache, cache[batch_ids], batch_ids, 0, n)
  ids, w = np.asarray(ids), np.exp(np.asarray(log_w, np.float64))
  for row, own in enumerate(np.asarray(batch_ids)):
    kept = {int(i) for i, wi in zip(ids, w[row]) if wi > 0}
    assert kept == set(range(n)) - {int(own)}                   # every exemplar but its own
    np.testing.assert_allclose(w[row][w[row] > 0], 1.0 / (n - 1), rtol=1e-6)
  _, log_w = exemplar.retrieve(jax.random.key(0), cache, cache[batch_ids], batch_ids, 0, n,
                             leave_one_out=False)
  np.testing.assert_allclose(np.exp(np.asarray(log_w, np.float64)).sum(1), 1.0, rtol=1e-6)


def test_retrieval_with_k_equal_to_n_is_the_full_prior_and_small_k_the_nearest():
  rng = np.random.default_rng(2)
  n, d = 20, 3
  cache = rng.normal(size=(n, d))
  batch_ids = np.array([0, 5])
  z = rng.normal(size=(2, d))
  logvar = -1.0
  ids, log_w = exemplar.retrieve(jax.random.key(0), jnp.asarray(cache, jnp.float32),
                               jnp.asarray(cache[batch_ids], jnp.float32),
                               jnp.asarray(batch_ids, jnp.int32), n, n)
  got = priors.mixture_log_prob(jnp.asarray(z, jnp.float32), log_w,
                                jnp.asarray(cache[np.asarray(ids)], jnp.float32),
                                jnp.full((len(ids), d), logvar, jnp.float32))
  for b, own in enumerate(batch_ids):
    others = np.delete(cache, own, axis=0)
    direct = np.logaddexp.reduce(_log_normal_diag64(z[b], others, logvar)) - np.log(n - 1)
    np.testing.assert_allclose(float(got[b]), direct, rtol=1e-5, atol=1e-4)
  # k = 3 of all candidates: the batch's mixture is over the union of every example's 3
  # nearest exemplars (as the reference code's), each example's own left out of its row.
  ids, log_w = exemplar.retrieve(jax.random.key(0), jnp.asarray(cache, jnp.float32),
                               jnp.asarray(cache[batch_ids], jnp.float32),
                               jnp.asarray(batch_ids, jnp.int32), 0, 3)
  dist = ((cache[batch_ids][:, None] - cache[None]) ** 2).sum(-1)
  union = set(np.argsort(dist, axis=1)[:, :3].ravel().tolist())
  for b in range(2):
    kept = {int(i) for i, lw in zip(np.asarray(ids), np.asarray(log_w[b])) if lw > -np.inf}
    assert kept == union - {int(batch_ids[b])}
    np.testing.assert_allclose(np.exp(np.asarray(log_w[b], np.float64)).sum(), 1.0, rtol=1e-6)
