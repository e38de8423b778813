"""Tests of vae.load (vae/evaluation/trained.py), scripts/visualize.py and the gradient-estimator study."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae
from tests import linear_gaussian
from tests.helpers import run_script
from vae.data import datasets
from vae.evaluation import gradient_estimators as ge
from vae.reporting import figures
from vae.training import plots
from vae.training import checkpointing


@pytest.fixture
def workdir(smoke_pair):
  return smoke_pair / 'vae'


def test_api_round_trip(workdir):
  m = vae.load(workdir)  # best by validation ELBO
  assert m.step in (12, 24) and m.latent_dim == 2 and m.image_shape == (28, 28, 1)
  images, labels = m.load_split('test')
  x = m.to_float(images[:40])
  mean, logvar = m.encode(x)
  assert mean.shape == logvar.shape == (40, 2)
  assert m.decode(mean).shape == (40, 28, 28, 1)
  assert m.reconstruct(x).shape == (40, 28, 28, 1)
  a = m.sample(jax.random.key(1), 5, temperature=0.5)
  np.testing.assert_array_equal(a, m.sample(jax.random.key(1), 5, temperature=0.5))
  assert not np.array_equal(a, m.sample(jax.random.key(2), 5, temperature=0.5))
  assert float(a.min()) >= 0 and float(a.max()) <= 1
  elbo = m.elbo(x, jax.random.key(0))
  ll = m.log_likelihood(x, num_samples=200, key=jax.random.key(0))
  np.testing.assert_array_equal(ll, m.log_likelihood(x, num_samples=200, key=jax.random.key(0)))
  assert elbo.shape == ll.shape == (40,)
  assert float(jnp.mean(ll)) >= float(jnp.mean(elbo))
  assert vae.load(workdir, 'latest').step == 24
  with pytest.raises(checkpointing.CheckpointError, match='no checkpoint at step 7'):
    vae.load(workdir, 7)
  assert vae.load(workdir, '24').step == vae.load(workdir, np.int64(24)).step == 24
  for not_a_step in (24.7, '24.7', 24.0, True):  # int() would have loaded step 24 (or 1)
    with pytest.raises(checkpointing.CheckpointError, match='a step number .an integer.'):
      vae.load(workdir, not_a_step)
  # The prior's density and draws, whatever the prior (N(0, I) here).
  z = jnp.asarray([[0.5, -1.0]])
  np.testing.assert_allclose(m.log_prior(z), -np.log(2 * np.pi) - 0.5 * 1.25, rtol=1e-6)
  assert m.sample_prior(jax.random.key(0), 7).shape == (7, 2)
  # Draws past the device's memory, or past int32, are refused before any work (1e9 images
  # aborted the interpreter).
  with pytest.raises(ValueError, match=r'sample: n=1,000,000,000 draws need about .* GiB'):
    m.sample(jax.random.key(0), 10 ** 9)
  with pytest.raises(ValueError, match='more than 2,147,483,647 draws at once'):
    m.sample_prior(jax.random.key(0), 2 ** 31)


@pytest.mark.parametrize('images,message', [
    (lambda x: x * 255.0, r'float images span \[0, 255\].*uint8'),
    (lambda x: -x, r'float images span \[-1, 0\]'),
    (lambda x: (x * 255).astype(np.int64), 'dtype int64'),
    (lambda x: np.where(x > 0.5, np.nan, x), 'NaN'),
], ids=['floats in 0..255', 'negative floats', 'int64 pixels', 'NaN'])
def test_api_refuses_pixels_it_cannot_score(workdir, images, message):
  """Pixels outside what the model scores are refused with one line, not scored as nan,
  -inf or a positive "ELBO"; a split that does not exist is named."""
  m = vae.load(workdir)
  x = np.asarray(m.to_float(m.load_split('test')[0][:4]))
  assert np.all(np.isfinite(m.elbo(x)))
  for method in (m.elbo, m.encode, m.reconstruct):
    with pytest.raises(ValueError, match=message):
      method(images(x))
  with pytest.raises(ValueError, match="no split 'nosuch'; choose one of"):
    m.load_split('nosuch')


def test_manifold_grid_is_prior_quantiles():
  z = plots.manifold_latents(2, 5)
  q = plots.prior_quantile_grid(5)
  np.testing.assert_allclose(q[[0, 2, 4]], [-1.6448536, 0.0, 1.6448536], atol=1e-5)
  np.testing.assert_allclose(z[:5, 0], q)           # first row: z1 sweeps left to right
  np.testing.assert_allclose(z[::5, 1], q[::-1])    # z2 decreases down the rows
  basis = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
  z3 = plots.manifold_latents(3, 5, basis)
  np.testing.assert_allclose(z3[:, 1], z[:, 0])
  np.testing.assert_array_equal(z3[:, 2], 0.0)
  t = np.linspace(0, 1, 5)
  a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  np.testing.assert_allclose(np.linalg.norm(plots.slerp(a, b, t), axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(plots.lerp(a, b, t)[2], [0.5, 0.5])


@pytest.mark.parametrize('what', figures.WHAT)
def test_every_figure_is_written(workdir, tmp_path, what):
  m = vae.load(workdir)
  images, labels = m.load_split('test')
  out = tmp_path / f'{what}.png'
  decoded = figures.draw(what, m, images[:200], labels[:200], out, n=6)
  assert out.stat().st_size > 5_000
  if what == 'manifold':  # the picture decodes exactly the intended grid
    np.testing.assert_allclose(decoded, m.decode(plots.manifold_latents(2, 6)), atol=1e-6)


def test_visualize_cli_all(workdir, tmp_path):
  code, _, err = run_script('visualize', '--workdir', workdir, '--what', 'all', '--out',
                            tmp_path / 'v.png', '--num_examples', '100')
  assert code == 0, err
  assert len(list(tmp_path.glob('v_*.png'))) == len(figures.WHAT)


@pytest.fixture(scope='module')
def simple_model():
  model, exact, _, sample_x = linear_gaussian.make_problem(n=4, d=2, sigma=0.8)
  return model, linear_gaussian.perturbed(exact), sample_x(8)


def test_sampling_without_reparameterization_gives_zero_encoder_gradient(simple_model):
  model, params, x = simple_model
  g = ge.flatten(ge.encoder_gradient(model, params, x, jax.random.key(0), 10, 'sampled'))
  assert float(jnp.max(jnp.abs(g))) == 0.0
  p = ge.flatten(ge.encoder_gradient(model, params, x, jax.random.key(0), 10, 'pathwise'))
  assert float(jnp.linalg.norm(p)) > 0.1


def test_estimators_agree_in_expectation_and_pathwise_has_lower_variance(simple_model):
  model, params, x = simple_model
  reference = ge.flatten(ge.encoder_gradient(model, params, x, jax.random.key(99), 200_000,
                                             'pathwise'))
  reps = 4000
  for est, samples in (('pathwise', 1), ('score', 1), ('score_loo', 4)):
    fn = jax.jit(jax.vmap(lambda k, e=est, s=samples: ge.flatten(
        ge.encoder_gradient(model, params, x, k, s, e))))
    grads = np.asarray(fn(jax.random.split(jax.random.key(hash(est) % 1000), reps)))
    mean, se = grads.mean(0), grads.std(0, ddof=1) / np.sqrt(reps)
    z = (mean - np.asarray(reference)) / (se + 1e-6)
    assert np.all(np.abs(z) < 5.0), (est, z)            # unbiased
  stats = {est: ge.estimator_statistics(model, params, x, jax.random.key(3), 1, est, 2000,
                                        reference) for est in ('pathwise', 'score')}
  assert stats['pathwise']['total_variance'] * 10 < stats['score']['total_variance']
  assert stats['pathwise']['cosine'] > stats['score']['cosine']


def test_gradient_variance_script(workdir, tmp_path):
  out = tmp_path / 'gv.png'
  code, _, err = run_script('gradient_variance', '--out', out, '--workdir', workdir, '--samples',
                            '1,10', '--repeats', '8', '--reference_samples', '200',
                            '--batch', '8')
  assert code == 0, err
  result = json.loads(out.with_suffix('.json').read_text())
  assert result['sampled_without_reparameterization_grad_norm'] == 0.0
  assert {r['samples'] for r in result['estimators']['pathwise']} == {1, 10}
  assert out.stat().st_size > 10_000


def test_figures_carry_axis_values_labels_and_class_names(workdir, tmp_path):
  m = vae.load(workdir)
  images, labels = m.load_split('test')
  _, fig = figures.draw('manifold', m, images[:200], labels[:200], tmp_path / 'm.png', n=6,
                        keep_figure=True)
  ax = fig.axes[0]
  assert ax.get_xlabel() == 'z1' and ax.get_ylabel() == 'z2'
  ticks = [t.get_text() for t in ax.get_xticklabels()]
  assert ticks[0] == '-1.64' and ticks[-1] == '1.64'  # prior quantiles 0.05 and 0.95
  _, fig = figures.draw('scatter', m, images[:200], labels[:200], tmp_path / 's.png',
                        keep_figure=True)
  names = [t.get_text() for t in fig.axes[1].get_yticklabels()]  # the colour bar
  want = datasets.class_names(m.config.data.name, int(labels[:200].max()) + 1)
  assert names == list(want) and fig.axes[0].get_xlabel() == 'z1'
  assert datasets.class_names('fashion_mnist', 10)[9] == 'Ankle boot'


def test_point_labels_are_placed_without_overlap():
  """The rate-distortion figure's beta labels: crowded points (8 within a few pixels, as
  betas 0.25..8 at one latent size can be) get label boxes that do not intersect."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 5))
  xs, ys = np.linspace(10, 10.6, 8), np.linspace(200, 201, 8)
  ax.plot(xs, ys, 'o-')
  ax.set_xlim(0, 40)
  ax.set_ylim(150, 260)
  boxes = figures.place_labels(fig, ax, [(f'beta={b}', (x, y)) for b, x, y in zip(
      [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0], xs, ys)])
  assert len(boxes) == 8
  for i, a in enumerate(boxes):
    for b in boxes[i + 1:]:
      assert not a.overlaps(b)
  plt.close(fig)
