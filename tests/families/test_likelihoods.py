"""Tests of vae/families/likelihoods.py against independent float64 formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.families import likelihoods
from vae.families.likelihoods import Likelihood

RNG = np.random.default_rng(0)


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def test_bernoulli_matches_reference_and_is_finite_for_huge_logits():
  logits = RNG.normal(0, 3, 1000)
  x = RNG.integers(0, 2, 1000).astype(np.float64)
  p = _sigmoid(logits)
  ref = x * np.log(p) + (1 - x) * np.log1p(-p)
  np.testing.assert_allclose(likelihoods.bernoulli_log_prob(jnp.asarray(logits, jnp.float32),
                                                            jnp.asarray(x, jnp.float32)),
                             ref, rtol=1e-4, atol=1e-5)
  big = jnp.array([1e4, -1e4, 1e4, -1e4])
  out = likelihoods.bernoulli_log_prob(big, jnp.array([1.0, 0.0, 0.0, 1.0]))
  np.testing.assert_allclose(out, [0.0, 0.0, -1e4, -1e4])
  g = jax.grad(lambda l: jnp.sum(likelihoods.bernoulli_log_prob(l, jnp.array([0.0, 1.0]))))(
      jnp.array([1e4, -1e4]))
  assert np.all(np.isfinite(g))


def test_fused_softplus_keeps_the_values_and_has_the_sigmoid_as_derivative():
  """`softplus` (the continuous Bernoulli's with model.bernoulli_impl=fused): the same
  log-likelihood to the bit as jax.nn.softplus, and a gradient x - sigmoid(l) within float32
  rounding of autodiff's, for logits from -1e4 to 1e4, NaN passed through."""
  logits = np.concatenate([RNG.normal(0, 6, 2000), [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0, 90.0,
                                                     -90.0, 1e4, -1e4]])
  logits = jnp.asarray(logits, jnp.float32)
  x = jnp.asarray(RNG.random(logits.shape), jnp.float32)
  new = lambda l: likelihoods.bernoulli_log_prob(l, x, 'fused')
  old = lambda l: likelihoods.bernoulli_log_prob(l, x, 'autodiff')
  np.testing.assert_array_equal(new(logits), old(logits))
  value, grad = jax.value_and_grad(lambda l: jnp.sum(new(l)))(logits)
  assert value == jnp.sum(old(logits))
  l64 = np.asarray(logits, np.float64)
  sigmoid = np.exp(-np.logaddexp(0.0, -l64))
  want = np.asarray(x, np.float64) - sigmoid
  autodiff = jax.grad(lambda l: jnp.sum(old(l)))(logits)
  np.testing.assert_allclose(grad, want, rtol=2e-6, atol=2e-7)
  # At least as exact as autodiff's derivative (which is off by up to ~5e-7 here).
  assert np.max(np.abs(grad - want)) <= np.max(np.abs(autodiff - want))
  np.testing.assert_allclose(grad, autodiff, rtol=0, atol=1e-6)
  assert np.isnan(likelihoods.softplus(jnp.float32(np.nan)))
  assert np.isnan(jax.grad(likelihoods.softplus)(jnp.float32(np.nan)))


@pytest.mark.parametrize('shape', [(28, 28, 1), (5, 5, 3)])  # 784 = 49 x 16; 75 pads to 80
@pytest.mark.parametrize('pixels', ['binary', 'grey'])
def test_fused_bernoulli_sum_and_its_derivative_match_float64(shape, pixels):
  """model.bernoulli_impl=fused (`bernoulli_log_prob_sum_fused`): the per-example sum and its
  gradient in the logits agree with a float64 reference and with autodiff of the per-pixel
  sum, under a sample axis that broadcasts x, for huge logits too; a weighted sum of
  examples (what the loss is) differentiates to the weighted per-pixel gradients."""
  logits = RNG.normal(0, 6, (3, 4) + shape)
  logits[0, 0, 0, 0, 0], logits[1, 1, 0, 0, 0], logits[2, 2, 1, 0, 0] = 1e4, -1e4, 40.0
  x = RNG.random((4,) + shape)
  x = (x < 0.4).astype(np.float64) if pixels == 'binary' else x
  l32, x32 = jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32)
  l64 = np.asarray(l32, np.float64)
  want = np.sum(x * l64 - np.logaddexp(0.0, l64), axis=(-3, -2, -1))
  got = likelihoods.bernoulli_log_prob_sum_fused(l32, x32)
  assert got.shape == (3, 4)
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-3)
  weights = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
  grad = jax.grad(lambda l: jnp.sum(weights * likelihoods.bernoulli_log_prob_sum_fused(l, x32)))(
      l32)
  want_grad = np.asarray(weights)[..., None, None, None] * (x - np.exp(-np.logaddexp(0.0, -l64)))
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
  autodiff = jax.grad(lambda l: jnp.sum(weights * jnp.sum(
      likelihoods.bernoulli_log_prob(l, x32, 'autodiff'), axis=(-3, -2, -1))))(l32)
  np.testing.assert_allclose(grad, autodiff, rtol=1e-5, atol=1e-6)
  fused = likelihoods.Likelihood('bernoulli', bernoulli_impl='fused')
  np.testing.assert_array_equal(fused.log_prob({'logits': l32}, x32), got)


@pytest.mark.parametrize('shape', [(28, 28, 1), (5, 5, 3)])  # 784 = 49 x 16; 75 pads to 80
@pytest.mark.parametrize('pixels', ['binary', 'grey'])
def test_grouped_bernoulli_sum_matches_a_float64_per_pixel_sum(shape, pixels):
  logits = RNG.normal(0, 6, (7,) + shape)
  logits[0, 0, 0, 0], logits[1, 0, 0, 0], logits[2, 1, 0, 0] = 1e4, -1e4, 40.0  # huge logits
  x = RNG.integers(0, 2, shape).astype(np.float64)
  if pixels == 'grey':
    x = RNG.uniform(0, 1, shape)
  x[0, 0, 0] = 1.0
  exact = np.sum(x * logits - np.logaddexp(0.0, logits), axis=(-3, -2, -1))
  l32, x32 = jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32)
  got = likelihoods.bernoulli_log_prob_sum(l32, x32)
  assert got.shape == (7,)
  # float32 rounding of a ~1e4-nat sum: a few ulps of the total, not of each pixel.
  np.testing.assert_allclose(got, exact, rtol=2e-6, atol=1e-4)
  # The group size changes only rounding: no factor's log is dropped or counted twice.
  for group in (1, 7, 32):
    np.testing.assert_allclose(likelihoods.bernoulli_log_prob_sum(l32, x32, group), exact,
                               rtol=2e-6, atol=1e-4)
  lik = Likelihood('bernoulli')
  np.testing.assert_allclose(lik.log_prob({'logits': l32}, x32, grouped_logs=True), got)
  np.testing.assert_allclose(lik.log_prob({'logits': l32}, x32), exact, rtol=2e-6, atol=1e-4)
  # A pixel certain and right scores 0 exactly, certain and wrong -|l| (no cancellation).
  np.testing.assert_array_equal(
      likelihoods.bernoulli_log_prob_sum(jnp.array([1e4, -1e4, 1e4, -1e4]).reshape(4, 1, 1, 1),
                                         jnp.array([1.0, 0.0, 0.0, 1.0]).reshape(4, 1, 1, 1)),
      [0.0, 0.0, -1e4, -1e4])


def test_gaussian_matches_reference_and_integrates_to_one():
  loc, log_scale, x = RNG.normal(size=50), RNG.normal(0, 0.5, 50), RNG.normal(size=50)
  s = np.exp(log_scale)
  ref = -0.5 * ((x - loc) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(likelihoods.gaussian_log_prob(loc, log_scale, x), ref, rtol=1e-5)
  grid = jnp.linspace(-12, 12, 20001)
  dens = jnp.exp(likelihoods.gaussian_log_prob(0.3, jnp.log(1.7), grid))
  assert float(jnp.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize('logit', [-8.0, -2.0, -0.3, -1e-3, 0.0, 1e-6, 1e-3, 0.02, 0.5, 4.0, 15.0])
def test_continuous_bernoulli_normalizer_and_integral(logit):
  lam = _sigmoid(np.float64(logit))
  if abs(lam - 0.5) < 1e-9:
    ref = math.log(2.0)
  else:
    ref = math.log(2 * math.atanh(1 - 2 * lam) / (1 - 2 * lam))
  got = float(likelihoods.continuous_bernoulli_log_norm(jnp.float32(logit)))
  assert got == pytest.approx(ref, abs=2e-5)
  grid = jnp.linspace(0.0, 1.0, 200001)
  dens = jnp.exp(likelihoods.continuous_bernoulli_log_prob(jnp.float32(logit), grid))
  assert float(jnp.trapezoid(dens, grid)) == pytest.approx(1.0, abs=2e-4)
  # The mean formula against numerical integration of x p(x).
  mean = float(jnp.trapezoid(grid * dens, grid))
  assert float(likelihoods.continuous_bernoulli_mean(jnp.float32(logit))) == pytest.approx(
      mean, abs=2e-4)


def test_continuous_bernoulli_is_smooth_across_one_half():
  logits = jnp.linspace(-0.05, 0.05, 1001)
  v = likelihoods.continuous_bernoulli_log_norm(logits)
  assert np.all(np.isfinite(v))
  assert float(jnp.max(jnp.abs(jnp.diff(v)))) < 1e-5
  g = jax.vmap(jax.grad(likelihoods.continuous_bernoulli_log_norm))(logits)
  np.testing.assert_allclose(g, logits / 6.0, atol=1e-4)  # d/dl (l^2/12) = l/6


def _logistic_bin_mass_ref(loc, scale, k):
  """Reference mass of 8-bit value k under a logistic on [-1, 1], edges to +-inf."""
  c = 2 * k / 255 - 1
  upper = 1.0 if k == 255 else _sigmoid((c + 1 / 255 - loc) / scale)
  lower = 0.0 if k == 0 else _sigmoid((c - 1 / 255 - loc) / scale)
  return upper - lower


@pytest.mark.parametrize('loc,log_scale', [(0.0, -3.0), (0.7, -5.0), (-0.95, -2.0), (0.2, 0.5)])
def test_discretized_logistic_matches_reference_and_sums_to_one(loc, log_scale):
  k = np.arange(256)
  x = jnp.asarray(k / 255.0, jnp.float32)
  logp = likelihoods.discretized_logistic_log_prob(jnp.float32(loc), jnp.float32(log_scale), x)
  ref = np.array([_logistic_bin_mass_ref(loc, np.exp(log_scale), i) for i in k])
  big = ref > 1e-6
  np.testing.assert_allclose(np.exp(np.asarray(logp, np.float64))[big], ref[big], rtol=2e-3)
  assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=2e-3)
  assert np.all(np.isfinite(logp))


def test_likelihood_sums_over_pixels_and_means_in_unit_interval():
  raw = jnp.asarray(RNG.normal(size=(3, 4, 4, 2)), jnp.float32)
  x = jnp.asarray(RNG.integers(0, 256, (3, 4, 4, 1)) / 255.0, jnp.float32)
  lik = Likelihood('discretized_logistic')
  params = lik.params(raw)
  assert params['loc'].shape == (3, 4, 4, 1)
  lp = lik.log_prob(params, x)
  assert lp.shape == (3,)
  np.testing.assert_allclose(lp, jnp.sum(lik.log_prob_per_pixel(params, x), axis=(1, 2, 3)))
  for name in likelihoods.REGISTRY:
    lik = Likelihood(name)
    r = raw[..., :lik.params_per_channel]
    m = lik.mean(lik.params(r))
    assert m.shape == (3, 4, 4, 1) and float(m.min()) >= 0 and float(m.max()) <= 1


def test_gaussian_learned_scale_shapes_and_unknown_names():
  assert Likelihood('gaussian', 'global').learned_scale_shape((28, 28, 1)) == ()
  assert Likelihood('gaussian', 'pixel').learned_scale_shape((28, 28, 1)) == (28, 28, 1)
  assert Likelihood('gaussian', 'fixed').learned_scale_shape((28, 28, 1)) is None
  with pytest.raises(ValueError, match='unknown likelihood'):
    Likelihood('poisson')


def test_bits_per_dim():
  assert likelihoods.bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)


@pytest.mark.parametrize('name, dequantize, offset', [
    ('bernoulli', False, 0.0), ('discretized_logistic', False, 0.0),
    ('gaussian', True, 8.0), ('continuous_bernoulli', True, 8.0),
    ('gaussian', False, None), ('continuous_bernoulli', False, None)])
def test_bits_per_dim_follows_each_likelihoods_pixel_protocol(name, dequantize, offset):
  """Binary and 8-bit pixels: -log2 p / D; a density on dequantized pixels (k + u) / 256:
  -log2 p / D + 8 (the 8-bit grid's cell has side 1/256); a density on pixels that were not
  dequantized: no bits/dim at all (a negative figure such as -2.3 meant nothing)."""
  assert likelihoods.bpd_offset(name, dequantize) == offset
  nats = -1.5 * 784 * math.log(2.0)  # a density above 1: log p > 0 per pixel
  got = likelihoods.bits_per_dim(nats, 784, likelihoods.bpd_offset(name, dequantize))
  assert got == (None if offset is None else pytest.approx(-1.5 + offset))
