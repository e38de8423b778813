"""Tests of vae/families/models.py: shapes, the autoencoder twin, learned scales, single tracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from vae.families import layers, models, objectives


def _model_config(**overrides):
  c = default.get_config()
  mc = c.model
  with mc.unlocked():
    for k, v in overrides.items():
      mc[k] = v
  return mc


@pytest.mark.parametrize('arch,upsample', [('mlp', 'subpixel'), ('conv', 'subpixel'),
                                           ('conv', 'transpose')])
@pytest.mark.parametrize('shape,likelihood', [((28, 28, 1), 'bernoulli'),
                                              ((32, 32, 3), 'discretized_logistic')])
def test_output_shapes(arch, upsample, shape, likelihood):
  mc = _model_config(arch=arch, latent_dim=7, likelihood=likelihood, hidden=(32,),
                     conv_channels=(8, 16), conv_dense=32, conv_upsample=upsample)
  model = models.build_model(mc, shape)
  x = jnp.zeros((5,) + shape)
  z = jnp.zeros((3, 5, 7))  # extra leading sample axis

  @jax.jit  # one compilation for every method
  def run(key):
    variables = model.init(key, x, key)
    out = model.apply(variables, x, key)
    mean, _ = model.apply(variables, x, method=model.encode)
    decoded = model.apply(variables, z, method=model.decode_mean)
    gen = model.apply(variables, key, 4, method=model.generate)
    return out, mean, decoded, gen

  out, mean, decoded, gen = run(jax.random.key(0))
  assert out['mean'].shape == out['logvar'].shape == out['z'].shape == (5, 7)
  for v in out['params'].values():
    assert v.shape == (5,) + shape
  assert mean.shape == (5, 7)
  assert decoded.shape == (3, 5) + shape
  assert gen.shape == (4,) + shape and float(gen.min()) >= 0 and float(gen.max()) <= 1


def test_gated_mlp_and_logvar_clamp():
  mc = _model_config(gated=True, hidden=(16, 8), clamp_logvar=True, logvar_min=-6.0,
                     logvar_max=2.0)
  model = models.build_model(mc, (28, 28, 1))
  x = jnp.ones((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, jax.random.key(1))
  assert 'gated_0' in variables['params']['encoder']['mlp']
  big = jax.tree.map(lambda p: p * 100.0, variables)
  _, logvar = model.apply(big, x, method=model.encode)
  assert float(logvar.min()) >= -6.0 and float(logvar.max()) <= 2.0


def test_autoencoder_is_deterministic_and_has_no_kl():
  mc = _model_config(type='ae', hidden=(16,))
  model = models.build_model(mc, (28, 28, 1))
  assert model.deterministic
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, jax.random.key(1))
  a = model.apply(variables, x, jax.random.key(1))
  b = model.apply(variables, x, jax.random.key(2))
  np.testing.assert_array_equal(a['z'], b['z'])
  np.testing.assert_array_equal(a['z'], a['mean'])
  loss, terms = objectives.per_example_objective(model, variables, x, jax.random.key(3))
  np.testing.assert_array_equal(terms['kl'], 0.0)
  np.testing.assert_allclose(loss, -terms['recon'])


def test_learned_gaussian_scale_is_a_parameter():
  mc = _model_config(likelihood='gaussian', gaussian_scale='pixel', hidden=(8,))
  model = models.build_model(mc, (28, 28, 1))
  x = jnp.zeros((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, jax.random.key(1))
  assert variables['params']['log_scale'].shape == (28, 28, 1)
  loss_fn = lambda p: jnp.mean(objectives.per_example_objective(
      model, {'params': p}, x, jax.random.key(2))[0])
  g = jax.grad(loss_fn)(variables['params'])
  assert float(jnp.abs(g['log_scale']).sum()) > 0


def test_depth_to_space_places_channels_in_2x2_blocks():
  h = jnp.arange(2 * 1 * 1 * 8).reshape(2, 1, 1, 8)
  out = models.depth_to_space(h)
  assert out.shape == (2, 2, 2, 2)
  np.testing.assert_array_equal(out[0, :, :, 0], [[0, 2], [4, 6]])
  np.testing.assert_array_equal(out[0, :, :, 1], [[1, 3], [5, 7]])
  # On a 2x2 map, each input pixel's channels fill its own 2x2 block of the output:
  # out[2i + a, 2j + b, c] = h[i, j, (2a + b) C + c].
  h = np.arange(3 * 2 * 2 * 12).reshape(3, 2, 2, 12)
  out = np.asarray(models.depth_to_space(jnp.asarray(h)))
  want = np.zeros((3, 4, 4, 3), h.dtype)
  for i, j, a, b in np.ndindex(2, 2, 2, 2):
    want[:, 2 * i + a, 2 * j + b] = h[:, i, j, (2 * a + b) * 3:(2 * a + b + 1) * 3]
  np.testing.assert_array_equal(out, want)


def test_gated_dense_is_the_value_times_the_sigmoid_of_the_gate():
  layer = layers.GatedDense(3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
  params = layer.init(jax.random.key(0), x)['params']
  value = x @ params['value']['kernel'] + params['value']['bias']
  gate = x @ params['gate']['kernel'] + params['gate']['bias']
  np.testing.assert_allclose(layer.apply({'params': params}, x),
                             value * jax.nn.sigmoid(gate), rtol=1e-5, atol=1e-6)


def test_conv_rejects_indivisible_shapes():
  mc = _model_config(arch='conv', conv_channels=(8, 16, 32))
  with pytest.raises(ValueError, match='divisible by 8'):
    models.build_model(mc, (28, 28, 1))


def test_loss_and_gradient_trace_once():
  mc = _model_config(hidden=(16,), latent_dim=4)
  model = models.build_model(mc, (28, 28, 1))
  x = jnp.zeros((8, 28, 28, 1))
  params = model.init(jax.random.key(0), x, jax.random.key(1))['params']

  @jax.jit
  @chex.assert_max_traces(n=1)
  def grad_fn(p, x, key, beta):
    loss = lambda q: jnp.mean(objectives.per_example_objective(
        model, {'params': q}, x, key, beta=beta)[0])
    return jax.value_and_grad(loss)(p)

  for i in range(3):  # new keys, data and beta values must not retrace
    grad_fn(params, x + i, jax.random.key(i), jnp.float32(0.5 * i))


# ----------------------------------------------------------------------------- model families


def test_two_level_elbo_equals_a_hand_computed_value():
  """q(z2 | x) q(z1 | x, z2), p(z2) p(z1 | z2) p(x | z1, z2) on a linear-Gaussian model: the
  library's single-draw ELBO equals the same terms written out in float64 numpy."""
  from tests import exact_families  # pylint: disable=g-import-not-at-top
  model, params, _, x = exact_families.two_layer(n=4, d=2, sigma=0.7)
  x = x[:6]
  # Distinct log-variances in each layer (the builder starts them all at one constant), so
  # that every term of the KL between two Gaussians, their log-variance ratio included,
  # contributes: a sign error in any term changes kl_z1 or kl_z2 by more than the tolerance.
  params = dict(params,
                encoder=dict(params['encoder'], logvar=jnp.array([-0.9, 0.4])),
                encoder_z1=dict(params['encoder_z1'], logvar=jnp.array([-1.0, -0.6])),
                prior_z1=dict(params['prior_z1'], logvar=jnp.array([0.4, 0.2])))
  key = jax.random.key(11)
  _, terms = jax.jit(lambda p: objectives.per_example_objective(model, {'params': p}, x, key))(
      params)
  # The library's noise for each layer (its key split), then everything by hand.
  k_top, k_z1 = jax.random.split(key)
  eps2 = np.asarray(objectives.reparameterize(k_top, jnp.zeros((6, 2)), jnp.zeros((6, 2))),
                    np.float64)
  eps1 = np.asarray(objectives.reparameterize(k_z1, jnp.zeros((6, 2)), jnp.zeros((6, 2))),
                    np.float64)
  f64 = lambda a: np.asarray(a, np.float64)
  xf = f64(x).reshape(6, 4)
  enc, enc1, pz1, dec = (params[k] for k in ('encoder', 'encoder_z1', 'prior_z1', 'decoder'))
  m2 = xf @ f64(enc['mean']['kernel']) + f64(enc['mean']['bias'])
  lv2 = f64(enc['logvar'])
  z2 = m2 + np.exp(lv2 / 2) * eps2
  m1 = np.concatenate([xf, z2], 1) @ f64(enc1['mean']['kernel']) + f64(enc1['mean']['bias'])
  lv1 = f64(enc1['logvar'])
  z1 = m1 + np.exp(lv1 / 2) * eps1
  pm = z2 @ f64(pz1['mean']['kernel']) + f64(pz1['mean']['bias'])
  plv = f64(pz1['logvar'])
  loc = np.concatenate([z1, z2], 1) @ f64(dec['out']['kernel']) + f64(dec['out']['bias'])
  recon = np.sum(-0.5 * ((xf - loc) / 0.7) ** 2 - np.log(0.7) - 0.5 * np.log(2 * np.pi), 1)
  kl2 = 0.5 * np.sum(np.exp(lv2) + m2 ** 2 - 1 - lv2, 1)
  kl1 = 0.5 * np.sum(plv - lv1 - 1 + (np.exp(lv1) + (m1 - pm) ** 2) / np.exp(plv), 1)
  np.testing.assert_allclose(np.asarray(terms['recon']), recon, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(terms['kl_z2']), kl2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(terms['kl_z1']), kl1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(terms['elbo']), recon - kl1 - kl2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('family', [
    dict(prior='mog', prior_components=4), dict(prior='vamp', prior_components=4),
    dict(posterior='iaf'), dict(stochastic_layers=2),
    dict(stochastic_layers=2, prior='vamp', prior_components=4, posterior='iaf')])
def test_every_family_builds_samples_and_encodes_with_documented_shapes(family):
  c = default.get_config()
  c.model.hidden = (32,)
  c.model.latent_dim = 3
  c.model.flow_hidden = (16,)
  for k, v in family.items():
    c.model[k] = v
  model = models.build_model(c.model, (28, 28, 1))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (5, 28, 28, 1)).astype(jnp.float32)
  params = model.init(jax.random.key(1), x[:1], jax.random.key(2))['params']
  total = 3 * c.model.stochastic_layers
  assert model.total_latent_dim == total and not model.analytic_kl

  @jax.jit
  def run(p):
    apply = lambda *a, **kw: model.apply({'params': p}, *a, **kw)
    return (apply(x, method=model.encode), apply(x, method=model.latent_point),
            apply(jax.random.key(3), 7, method=model.generate),
            objectives.per_example_objective(model, {'params': p}, x, jax.random.key(4),
                                              num_samples=3)[1])

  (mean, logvar), point, samples, terms = run(params)
  assert mean.shape == logvar.shape == point.shape == (5, total)
  assert samples.shape == (7, 28, 28, 1)
  assert float(samples.min()) >= 0 and float(samples.max()) <= 1
  assert np.all(np.isfinite(np.asarray(terms['iwae']))) and np.all(np.isfinite(point))
  if c.model.stochastic_layers == 2:
    np.testing.assert_allclose(np.asarray(terms['kl_z1'] + terms['kl_z2']),
                               np.asarray(terms['kl']), rtol=1e-5)


@pytest.mark.parametrize('gated', [False, True])
def test_q_z1_under_samples_runs_x_once_and_equals_the_concatenated_layer(gated, monkeypatch):
  """With sample axes the two-level model's q(z1 | x, z2) reads (x, z2) as a pair
  (`SharedInputDense`: x's part of the first layer once per example); it is the same
  function as the first layer on the broadcast concatenation, with the same parameters."""
  c = default.get_config()
  c.model.hidden = (32, 16)
  c.model.latent_dim = 3
  c.model.gated = gated
  c.model.stochastic_layers = 2
  model = models.build_model(c.model, (28, 28, 1))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (5, 28, 28, 1)).astype(jnp.float32)
  variables = model.init(jax.random.key(1), x[:1], jax.random.key(2))
  draw = lambda: model.apply(variables, x, jax.random.key(3), 4, method=model.posterior)
  seen = []
  real_call = layers.SharedInputDense.__call__
  monkeypatch.setattr(layers.SharedInputDense, '__call__',
                      lambda self, inputs: seen.append(inputs[0].shape) or real_call(self, inputs))
  paired = draw()
  assert seen and all(s == (5, 784) for s in seen)   # x unbroadcast: once per example
  concatenated = model.clone(q_z1_input='concatenated').apply(
      variables, x, jax.random.key(3), 4, method=model.posterior)
  assert len(seen) == (2 if gated else 1)              # the concatenated path does not use it
  for k in ('z', 'log_q', 'log_p'):
    assert paired[k].shape == concatenated[k].shape
    np.testing.assert_allclose(np.asarray(paired[k]), np.asarray(concatenated[k]),
                               rtol=1e-5, atol=1e-4)
  # One draw (training's path) concatenates as before: the same values to the last bit.
  one = model.clone(q_z1_input='concatenated').apply(variables, x, jax.random.key(3),
                                                     method=model.posterior)
  np.testing.assert_array_equal(
      np.asarray(one['z']),
      np.asarray(model.apply(variables, x, jax.random.key(3), method=model.posterior)['z']))


def test_q_z1_under_samples_without_hidden_layers_reads_the_concatenation(monkeypatch):
  """`model.hidden=()` leaves q(z1 | x, z2) a single linear head: under sample axes it takes
  the concatenated [x, z2] path (the shared-input path needs a first hidden layer), and each
  sample's log q equals the one recomputed from that sample's z2 alone."""
  c = default.get_config()
  c.model.hidden = ()
  c.model.latent_dim = 3
  c.model.stochastic_layers = 2
  model = models.build_model(c.model, (28, 28, 1))
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (5, 28, 28, 1)).astype(jnp.float32)
  variables = model.init(jax.random.key(1), x[:1], jax.random.key(2))
  seen = []
  real_call = layers.SharedInputDense.__call__
  monkeypatch.setattr(layers.SharedInputDense, '__call__',
                      lambda self, inputs: seen.append(inputs[0].shape) or real_call(self, inputs))
  post = model.apply(variables, x, jax.random.key(3), 4, method=model.posterior)
  assert not seen and post['z'].shape == (4, 5, 6) and post['log_q'].shape == (4, 5)
  mean, logvar, _ = model.apply(variables, x, method=lambda m, x: m._q_top(x))
  for s in range(4):
    z1, z2 = post['z'][s, :, :3], post['z'][s, :, 3:]
    m1, lv1, _ = model.apply(variables, x, z2, method=lambda m, x, z2: m._q_z1(x, z2))
    expected = (objectives.log_normal_diag(z2, mean, logvar)
                + objectives.log_normal_diag(z1, m1, lv1))
    np.testing.assert_allclose(np.asarray(post['log_q'][s]), np.asarray(expected),
                               rtol=1e-5, atol=1e-4)
