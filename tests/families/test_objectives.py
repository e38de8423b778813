"""Tests of vae/families/objectives.py: reparameterization, KL, ELBO, free bits, IWAE."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import exact_families, linear_gaussian
from vae.families import objectives


def test_reparameterize_moments_and_shapes():
  mean = jnp.array([1.5, -2.0, 0.0])
  logvar = jnp.array([0.0, math.log(4.0), math.log(0.25)])
  z = objectives.reparameterize(jax.random.key(0), mean, logvar, num_samples=200_000)
  assert z.shape == (200_000, 3)
  np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(z.var(0), jnp.exp(logvar), rtol=0.02)
  assert objectives.reparameterize(jax.random.key(0), mean, logvar).shape == (3,)
  batch = jnp.zeros((5, 3))
  assert objectives.reparameterize(jax.random.key(0), batch, batch, 7).shape == (7, 5, 3)


def test_reparameterize_same_key_same_draw_different_key_different_draw():
  mean, logvar = jnp.zeros(4), jnp.zeros(4)
  a = objectives.reparameterize(jax.random.key(3), mean, logvar)
  b = objectives.reparameterize(jax.random.key(3), mean, logvar)
  c = objectives.reparameterize(jax.random.key(4), mean, logvar)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_reparameterize_pathwise_gradient_is_analytic():
  key = jax.random.key(1)
  mean = jnp.array([0.3, -1.0])
  logvar = jnp.array([0.2, -0.5])
  eps = objectives.reparameterize(key, jnp.zeros(2), jnp.zeros(2))  # the draw itself

  def f(m, lv):  # f(z) = sum z^2
    return jnp.sum(objectives.reparameterize(key, m, lv) ** 2)

  g_mean, g_logvar = jax.grad(f, argnums=(0, 1))(mean, logvar)
  z = mean + jnp.exp(logvar / 2) * eps
  np.testing.assert_allclose(g_mean, 2 * z, rtol=1e-5)
  np.testing.assert_allclose(g_logvar, 2 * z * eps * jnp.exp(logvar / 2) / 2, rtol=1e-5)


def test_sampling_without_reparameterization_cuts_the_encoder_off():
  """z drawn as a sample (stop_gradient through the draw) gives the encoder no
  gradient from the reconstruction term; the reparameterized z does."""
  key = jax.random.key(2)
  x = jnp.array([1.0, -2.0, 0.5])

  def recon(enc_w, reparam):
    mean, logvar = enc_w * x, jnp.full(3, -1.0) + 0.1 * enc_w
    if reparam:
      z = objectives.reparameterize(key, mean, logvar)
    else:  # a "sampling layer": the draw is a constant as far as autodiff knows
      z = jax.lax.stop_gradient(objectives.reparameterize(key, mean, logvar))
    return -jnp.sum((z - x) ** 2)

  g_sample = jax.grad(recon)(0.7, False)
  g_reparam = jax.grad(recon)(0.7, True)
  assert g_sample == 0.0
  assert abs(g_reparam) > 0.1


def test_noise_is_prefix_stable_across_latent_sizes():
  """Dimension d's noise comes from fold_in(key, d): a padded model sees the same eps."""
  key = jax.random.key(9)
  small = objectives.reparameterize(key, jnp.zeros((4, 3)), jnp.zeros((4, 3)), 5)
  big = objectives.reparameterize(key, jnp.zeros((4, 8)), jnp.zeros((4, 8)), 5)
  np.testing.assert_array_equal(big[..., :3], small)


def test_latent_mask_reproduces_the_smaller_model(lg):
  """A 3-latent model padded to 5 with a mask: same loss and gradients as the 3-latent one."""
  model, exact, _, sample_x = lg
  big_model = linear_gaussian.make_problem(d=5)[0]
  worse = linear_gaussian.perturbed(exact)
  pad = lambda a, axis: jnp.concatenate(
      [a, jnp.zeros(a.shape[:axis] + (2,) + a.shape[axis + 1:], a.dtype)], axis=axis)
  padded = {
      'encoder': {'mean': {'kernel': pad(worse['encoder']['mean']['kernel'], 1),
                           'bias': pad(worse['encoder']['mean']['bias'], 0)},
                  'logvar': pad(worse['encoder']['logvar'], 0)},
      'decoder': {'out': {'kernel': pad(worse['decoder']['out']['kernel'], 0),
                          'bias': worse['decoder']['out']['bias']}},
  }
  mask = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
  x = sample_x(16)
  for k, fb in ((1, 0.0), (1, 0.3), (4, 0.0)):
    def loss(p, m, lm):
      return jnp.mean(objectives.per_example_objective(
          m, {'params': p}, x, jax.random.key(5), free_bits=fb, num_samples=k,
          latent_mask=lm)[0])
    l_small, g_small = jax.value_and_grad(loss)(worse, model, None)
    l_big, g_big = jax.value_and_grad(loss)(padded, big_model, mask)
    np.testing.assert_allclose(l_big, l_small, rtol=1e-5)
    np.testing.assert_allclose(g_big['encoder']['mean']['kernel'][:, :3],
                               g_small['encoder']['mean']['kernel'], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(g_big['encoder']['mean']['kernel'][:, 3:], 0.0)
    np.testing.assert_allclose(g_big['decoder']['out']['kernel'][:3],
                               g_small['decoder']['out']['kernel'], rtol=1e-4, atol=1e-6)


def test_kl_matches_monte_carlo_and_is_zero_at_prior():
  mean = jnp.array([0.5, -1.0, 2.0])
  logvar = jnp.array([-0.5, 0.3, 1.0])
  z = objectives.reparameterize(jax.random.key(5), mean, logvar, 400_000)
  mc = jnp.mean(objectives.log_normal_diag(z, mean, logvar) - objectives.log_standard_normal(z))
  analytic = objectives.gaussian_kl(mean, logvar)
  np.testing.assert_allclose(mc, analytic, rtol=0.01)
  assert objectives.gaussian_kl(jnp.zeros(5), jnp.zeros(5)) == 0.0
  assert objectives.gaussian_kl_per_dim(mean, logvar).shape == (3,)


def test_log_mean_exp_is_stable():
  x = jnp.array([[1000.0, -1000.0], [1000.0, -1001.0]])
  out = objectives.log_mean_exp(x, axis=0)
  np.testing.assert_allclose(out, [1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)],
                             rtol=1e-6)


def test_kl_warmup_ramps_linearly():
  assert float(objectives.kl_weight(0, 2.0, 100)) == 0.0
  assert float(objectives.kl_weight(50, 2.0, 100)) == pytest.approx(1.0)
  assert float(objectives.kl_weight(500, 2.0, 100)) == pytest.approx(2.0)
  assert float(objectives.kl_weight(0, 2.0, 0)) == pytest.approx(2.0)


def test_free_bits_floors_batch_mean_per_dimension():
  kl = jnp.array([[0.1, 2.0], [0.3, 4.0]])      # dim 0 mean 0.2 < 0.5, dim 1 mean 3 > 0.5
  out = objectives.free_bits_kl(kl, 0.5)
  np.testing.assert_allclose(out, [0.5 + 2.0, 0.5 + 4.0])
  np.testing.assert_allclose(jnp.mean(out), 0.5 + 3.0)
  g = jax.grad(lambda k: jnp.sum(objectives.free_bits_kl(k, 0.5)))(kl)
  np.testing.assert_array_equal(g, [[0.0, 1.0], [0.0, 1.0]])  # floored dim gets no gradient
  np.testing.assert_allclose(objectives.free_bits_kl(kl, 0.0), kl.sum(-1))
  masked = objectives.free_bits_kl(kl, 0.25, mask=jnp.array([True, False]))
  np.testing.assert_allclose(masked, [0.25 + 2.0, 0.25 + 4.0])  # masked mean of dim 0 = 0.1


def test_elbo_below_log_px_and_tight_at_exact_posterior(lg):
  model, exact, log_px, sample_x = lg
  x = sample_x(64)
  truth = log_px(x)
  # At the exact posterior log w = log p(x, z) - log q(z | x) is constant in z.
  log_px, log_ratio, _, _ = objectives.importance_log_weights(
      model, {'params': exact}, x, jax.random.key(0), 5)
  np.testing.assert_allclose(log_px + log_ratio, np.broadcast_to(truth, (5, 64)), atol=2e-3)
  # The analytic-KL ELBO estimate is noisy per draw but its mean is log p(x).
  elbo_fn = jax.jit(jax.vmap(lambda k: objectives.per_example_objective(
      model, {'params': exact}, x, k)[1]['elbo']))
  draws = elbo_fn(jax.random.split(jax.random.key(1), 400))
  np.testing.assert_allclose(draws.mean(0), truth, atol=4 * draws.std(0).max() / 20)
  worse = linear_gaussian.perturbed(exact)
  elbo_fn = jax.jit(jax.vmap(lambda k: objectives.per_example_objective(
      model, {'params': worse}, x, k)[1]['elbo']))
  gap = truth - np.mean(elbo_fn(jax.random.split(jax.random.key(2), 200)), axis=0)
  assert np.all(gap > 0.05), gap.min()


def test_iwae_bound_rises_toward_log_px(lg):
  model, exact, log_px, sample_x = lg
  worse = linear_gaussian.perturbed(exact)
  x = sample_x(64)
  truth = log_px(x).mean()
  bounds = []
  for k in (1, 10, 100, 1000):
    _, t = objectives.per_example_objective(model, {'params': worse}, x, jax.random.key(k),
                                            num_samples=k)
    bound = t.get('iwae', t['elbo'])
    bounds.append(float(jnp.mean(bound)))
  assert all(b < truth + 0.02 for b in bounds), (bounds, truth)
  assert bounds[0] < bounds[1] < bounds[2] < bounds[3], bounds
  assert truth - bounds[-1] < 0.25 * (truth - bounds[0])


def _log_weights_by_hand(model, params, x, key, k, beta):
  """log w_s = log p(x | z_s) + beta * (log p(z_s) - log q(z_s | x)) [k, B], built from the
  model's own pieces (posterior draws, decoder, likelihood), not from the objective."""
  v = {'params': params}
  if model.analytic_kl:
    log_px, log_ratio, _, _ = objectives.importance_log_weights(model, v, x, key, k)
  else:
    post = model.apply(v, x, key, k, method=model.posterior)
    log_px = model.likelihood.log_prob(model.apply(v, post['z'], method=model.decode), x)
    log_ratio = post['log_p'] - post['log_q']
  return np.asarray(log_px, np.float64) + beta * np.asarray(log_ratio, np.float64)


FAMILIES = {
    'one layer, analytic': lambda: exact_families.one_layer(),
    'mixture prior': lambda: exact_families.one_layer(prior='mog'),
    'iaf posterior': lambda: exact_families.one_layer(posterior='iaf'),
    'two layers': lambda: exact_families.two_layer(),
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_iwae_loss_is_minus_the_log_mean_of_the_importance_weights(family):
  """For k = 2 and 10 the training loss is -log (1/k) sum_s w_s, computed here in float64
  from the same draws: not the mean of log w (the k-sample ELBO, lower by Jensen's gap)."""
  model, params, _, x = FAMILIES[family]()
  x, key = x[:16], jax.random.key(3)
  for k, beta in ((2, 1.0), (10, 1.0), (10, 0.5)):
    loss, terms = objectives.per_example_objective(model, {'params': params}, x, key,
                                                   beta=beta, num_samples=k)
    log_w = _log_weights_by_hand(model, params, x, key, k, beta)
    expected = -(np.logaddexp.reduce(log_w, axis=0) - math.log(k))
    np.testing.assert_allclose(np.asarray(loss, np.float64), expected, rtol=1e-5, atol=1e-4)
    # The check can fail: the k-sample ELBO differs from it by far more than the tolerance.
    assert np.max(np.abs(-log_w.mean(0) - expected)) > 0.1
    if beta == 1.0:  # the reported bound is the same quantity
      np.testing.assert_allclose(np.asarray(terms['iwae']), -expected, rtol=1e-5, atol=1e-4)
    # estimator='elbo' is that k-sample average ELBO.
    loss_elbo, _ = objectives.per_example_objective(model, {'params': params}, x, key,
                                                    beta=beta, num_samples=k, estimator='elbo')
    np.testing.assert_allclose(np.asarray(loss_elbo, np.float64), -log_w.mean(0), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_one_sample_loss_is_minus_the_elbo(family):
  """k = 1: loss = -(recon - KL) = -ELBO at beta = 1, and -(recon - beta KL) otherwise."""
  model, params, _, x = FAMILIES[family]()
  x, key = x[:16], jax.random.key(4)
  loss, t = objectives.per_example_objective(model, {'params': params}, x, key)
  np.testing.assert_allclose(loss, -t['elbo'], rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(t['elbo'], t['recon'] - t['kl'], rtol=1e-6, atol=1e-5)
  half, _ = objectives.per_example_objective(model, {'params': params}, x, key, beta=0.5)
  np.testing.assert_allclose(half, -(t['recon'] - 0.5 * t['kl']), rtol=1e-6, atol=1e-5)
  if model.analytic_kl:  # the KL is the closed form at the encoder's output
    mean, logvar = (np.asarray(a, np.float64) for a in model.apply(
        {'params': params}, x, method=model.encode))
    kl = 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)
    np.testing.assert_allclose(np.asarray(t['kl']), kl, rtol=1e-5, atol=1e-5)
    log_px, _, _, _ = objectives.importance_log_weights(model, {'params': params}, x, key, 1)
    np.testing.assert_allclose(t['recon'], log_px[0], rtol=1e-6, atol=1e-5)
