"""Tests of vae/training/estimates.py, scripts/evaluate.py and scripts/compare_ae_vae.py."""

import hashlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import linear_gaussian
from tests.helpers import run_script, smoke_config
from vae.data import input_pipeline
from vae.training import estimates
from vae.families import models, objectives


def test_iw_estimate_converges_to_log_px_with_honest_error_bars(lg):
  model, exact, log_px, sample_x = lg
  worse = linear_gaussian.perturbed(exact, scale=0.5, logvar_shift=1.2)
  x = sample_x(400)
  truth = log_px(x)
  est = jax.jit(lambda k: estimates.iw_log_likelihood(
      model, {'params': worse}, x, k, 2000, 250, report_at=(1, 10, 100)))(jax.random.key(0))
  est = np.asarray(est, np.float64)                      # [4, N]: k = 1, 10, 100, 2000
  errors = [np.mean(np.abs(e - truth)) for e in est]
  assert errors[0] > errors[1] > errors[2] > errors[3], errors
  assert errors[3] < 0.05
  # The standard error over examples of (estimate - truth) covers zero.
  diff = est[-1] - truth
  assert abs(diff.mean()) < 3 * diff.std(ddof=1) / math.sqrt(len(diff)) + 1e-3
  # k = 1 is the single-sample ELBO: equal in expectation to the analytic-KL ELBO.
  elbo = jax.vmap(lambda k: objectives.per_example_objective(
      model, {'params': worse}, x, k)[1]['elbo'])(jax.random.split(jax.random.key(1), 50))
  gap = est[0] - np.asarray(elbo).mean(0)
  assert abs(gap.mean()) < 4 * gap.std(ddof=1) / math.sqrt(len(gap))
  assert est[0].mean() < est[1].mean() < est[2].mean() < est[3].mean() < truth.mean() + 0.01


def test_iw_chunking_does_not_change_the_estimate(lg):
  model, exact, _, sample_x = lg
  x = sample_x(16)
  worse = linear_gaussian.perturbed(exact)
  a = estimates.iw_log_likelihood(model, {'params': worse}, x, jax.random.key(3), 64, 64)
  b = estimates.iw_log_likelihood(model, {'params': worse}, x, jax.random.key(3), 64, 64)
  np.testing.assert_array_equal(a, b)  # deterministic given the key
  c = estimates.iw_log_likelihood(model, {'params': worse}, x, jax.random.key(3), 60, 16)
  assert c.shape == (1, 16) and np.all(np.isfinite(c))


def test_iw_decoding_in_tiles_gives_the_same_estimate(lg):
  model, exact, _, sample_x = lg
  x = sample_x(16)
  worse = linear_gaussian.perturbed(exact)
  est = lambda rows: np.asarray(estimates.iw_log_likelihood(
      model, {'params': worse}, x, jax.random.key(3), 120, 60, report_at=(7,),
      options=estimates.IWOptions(decode_rows_cpu=rows)))
  assert estimates._decode_tile(60, 16, 10 ** 9) == 60
  whole = est(10 ** 9)
  assert estimates._decode_tile(60, 16, 100) == 6  # 6 x 16 = 96 rows per decoder call
  np.testing.assert_allclose(est(100), whole, rtol=1e-6, atol=1e-5)
  assert estimates._decode_tile(60, 16, 1) == 1
  assert estimates.IWOptions().decode_rows_cpu == 4096


@pytest.mark.parametrize('pixels', ['binary', 'grey'])
def test_grouped_logs_leave_a_bernoulli_estimate_unchanged(pixels):
  """One log per pixel group (IWOptions.grouped_logs, the default) changes only float32 rounding (against the
  per-pixel sum of model.bernoulli_impl=autodiff; the fused one groups its logs itself)."""
  c = smoke_config(**{'model.bernoulli_impl': 'autodiff'})
  model = models.build_model(c.model, (28, 28, 1))
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (6, 28, 28, 1))
  x = jnp.asarray(x < 0.3 if pixels == 'binary' else x, jnp.float32)
  variables = model.init(jax.random.key(0), x, jax.random.key(1))
  # Confident logits, as a trained decoder's: scale the decoder's weights up.
  variables = {'params': dict(variables['params'])}
  variables['params']['decoder'] = jax.tree.map(lambda a: 2.0 * a,
                                                variables['params']['decoder'])
  est = lambda **options: np.asarray(estimates.iw_log_likelihood(
      model, variables, x, jax.random.key(2), 40, 20,
      options=estimates.IWOptions(**options)), np.float64)
  per_pixel = est(grouped_logs=False)
  grouped = est()
  assert np.all(np.abs(per_pixel) > 50)  # not a trivial model
  np.testing.assert_allclose(grouped, per_pixel, rtol=2e-6, atol=2e-4)
  assert not np.array_equal(grouped, per_pixel)  # the grouped path did run


def test_active_units_on_a_model_with_dead_dimensions(lg):
  model, exact, _, sample_x = lg
  dead = jax.tree.map(lambda a: a, exact)
  kernel = dead['encoder']['mean']['kernel']
  dead['encoder']['mean']['kernel'] = kernel.at[:, 1:].set(0.0)   # dims 1, 2 ignore x
  dead['encoder']['logvar'] = jnp.zeros(3)
  x = sample_x(300)
  mean, logvar = model.apply({'params': dead}, x, method=model.encode)
  count, var = estimates.active_units(mean.sum(0), (mean ** 2).sum(0), 300)
  assert count == 1 and var[0] > 0.01 and np.all(np.abs(var[1:]) < 1e-5)


def test_eval_fn_counts_every_example_once(lg):
  model, exact, _, sample_x = lg
  x = np.asarray(sample_x(23))
  batches, mask = input_pipeline.pad_to_batches(x, 5)
  fn = estimates.make_eval_fn(model, input_pipeline.SCALE)  # divides by 255
  sums = jax.jit(fn)(exact, jnp.asarray(batches), jnp.asarray(mask), jax.random.key(0))
  assert float(sums['count']) == 23
  _, terms = objectives.per_example_objective(model, {'params': exact},
                                              jnp.asarray(x) / 255.0, jax.random.key(0))
  assert float(sums['kl']) == pytest.approx(float(jnp.sum(terms['kl'])), rel=1e-5)


@pytest.fixture
def trained_pair(smoke_pair):
  return smoke_pair


def test_evaluate_script_writes_eval_json(trained_pair):
  workdir = trained_pair / 'vae'
  rc, out, err = run_script('evaluate', '--workdir', workdir, '--num_samples', '20',
                            '--max_examples', '100', '--checkpoint', 'latest')
  assert rc == 0, err
  result = json.loads((workdir / 'eval.json').read_text())
  assert result['num_examples'] == 100 and result['checkpoint_step'] == 24
  assert set(result['convergence']) == {'1', '10', '20'}
  assert result['log_likelihood'] >= result['elbo'] - 1.0
  assert result['log_likelihood'] == pytest.approx(-result['nll'])
  assert len(result['kl_per_dim']) == 2 and 'mutual_info' in result['latent']
  assert 'log p(x), k=20' in out
  assert run_script('evaluate', '--workdir', trained_pair / 'nope')[0] == 2
  # The per-image file is written whole before the report that names its hash.
  data = (workdir / 'eval.npz').read_bytes()
  assert result['per_example_sha256'] == hashlib.sha256(data).hexdigest()
  per_image = np.load(workdir / 'eval.npz')['log_likelihood']
  assert per_image.shape == (100,)
  # The error bar is the standard error of the mean over the images.
  assert result['log_likelihood_se'] == pytest.approx(np.std(per_image, ddof=1) / 10, rel=1e-5)
  assert not list(workdir.glob('*.tmp*'))
  # --out X.npz would have the report overwrite the per-image file of the same name.
  rc, _, err = run_script('evaluate', '--workdir', workdir, '--num_samples', '5',
                          '--out', workdir / 'mine.npz')
  assert rc == 2 and 'ends in .npz' in err and not (workdir / 'mine.npz').exists()


def test_compare_ae_vae_writes_figure_and_table(trained_pair, tmp_path):
  out = tmp_path / 'cmp.png'
  rc, _, err = run_script('compare_ae_vae', '--vae', trained_pair / 'vae', '--ae',
                          trained_pair / 'ae', '--out', out, '--max_examples', '200')
  assert rc == 0, err
  assert out.stat().st_size > 10_000
  table = json.loads(out.with_suffix('.json').read_text())
  assert 'mutual_info' in table['VAE'] and 'mutual_info' not in table['AE']
  assert table['AE']['nn_distance_ratio'] > 0
  assert run_script('compare_ae_vae', '--vae', trained_pair / 'ae', '--ae', trained_pair / 'ae',
                    '--out', out)[0] == 2


@pytest.mark.parametrize('family', ['standard', 'mog', 'vamp', 'exemplar', 'iaf', 'two_layer',
                                    'two_layer_iaf'])
def test_iw_estimate_approaches_the_exact_log_px_for_every_family(family):
  """Linear-Gaussian models of each family (tests/exact_families.py), whose log p(x) is a
  Gaussian or a mixture of Gaussians. With q fitted to the fixed p (a few hundred Adam
  steps on the ELBO), the k-sample estimate improves with k and lands on the exact value,
  and the single-draw ELBO lies below it."""
  from tests import exact_families  # pylint: disable=g-import-not-at-top
  if 'two_layer' in family:
    model, params, log_px, x = exact_families.two_layer(
        posterior='iaf' if family.endswith('iaf') else 'diagonal')
  else:
    model, params, log_px, x = exact_families.one_layer(
        prior=family if family in ('mog', 'vamp', 'exemplar') else 'standard',
        posterior='iaf' if family == 'iaf' else 'diagonal')
  params = exact_families.fit_posterior(model, params, x)
  truth = log_px(x, params)
  est = jax.jit(lambda p: estimates.iw_log_likelihood(
      model, exact_families.variables(model, p), x, jax.random.key(0), 4000, 500,
      report_at=(1, 100)))(params)
  est = np.asarray(est, np.float64)                    # [3, N]: k = 1, 100, 4000
  errors = [np.mean(np.abs(e - truth)) for e in est]
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.05, errors
  assert est[0].mean() < truth.mean()


FAMILIES = {
    'mog': ['--config.model.prior=mog', '--config.model.prior_components=8'],
    'vamp_iaf': ['--config.model.prior=vamp', '--config.model.prior_components=8',
                 '--config.model.posterior=iaf', '--config.model.flow_hidden=(32,)'],
    'two_layer_vamp': ['--config.model.stochastic_layers=2', '--config.model.prior=vamp',
                       '--config.model.prior_components=8'],
    'exemplar': ['--config.model.prior=exemplar', '--config.model.exemplar_candidates=300'],
    'two_layer_exemplar': ['--config.model.stochastic_layers=2', '--config.model.prior=exemplar'],
    # ConvHVAE (vae/families/gated_conv.py), narrowed to 8 channels for the CPU.
    'conv_two_layer': ['--config.model.arch=conv', '--config.model.stochastic_layers=2',
                       '--config.model.conv_channels=(8,8)'],
    'conv_two_layer_vamp': ['--config.model.arch=conv', '--config.model.stochastic_layers=2',
                            '--config.model.conv_channels=(8,8)', '--config.model.prior=vamp',
                            '--config.model.prior_components=8'],
    'conv_two_layer_exemplar': ['--config.model.arch=conv', '--config.model.stochastic_layers=2',
                                '--config.model.conv_channels=(8,8)',
                                '--config.model.prior=exemplar'],
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_family_trains_resumes_and_evaluates_from_the_command_line(family, tmp_path):
  """train.py (one epoch, then resumed to two) and scripts/evaluate.py for each family:
  the importance-weighted log p(x) is at least the ELBO (NLL <= -ELBO), per-layer KLs and
  active units are reported, samples come from the run's prior, and vae.load works."""
  import vae  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / family
  base = ['--config', 'configs/default.py:smoke', '--workdir', str(workdir), *FAMILIES[family]]
  assert run_script('train', *base, '--config.train.num_epochs=1')[0] == 0
  rc, _, err = run_script('train', *base)     # resumes from the epoch-1 checkpoint
  assert rc == 0, err
  events = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  evals = [e for e in events if e['event'] == 'eval']
  assert [e["step"] for e in evals] == [12, 24]
  assert all(np.isfinite(e['val/elbo']) and e['val/kl'] > 0 for e in evals)
  if 'two_layer' in family:
    assert evals[-1]['val/kl_z1'] + evals[-1]['val/kl_z2'] == pytest.approx(evals[-1]['val/kl'],
                                                                              rel=1e-4)
    assert 'val/active_units_z2' in evals[-1]
  rc, out, err = run_script('evaluate', '--workdir', workdir, '--num_samples', '64',
                            '--max_examples', '128')
  assert rc == 0, err
  result = json.loads((workdir / 'eval.json').read_text())
  assert result['log_likelihood'] > result['elbo']
  per_example = np.load(workdir / 'eval.npz')['log_likelihood']
  assert per_example.shape == (128,) and per_example.mean() == pytest.approx(
      result['log_likelihood'], rel=1e-6)
  assert 'kl_per_dim' not in result  # no analytic per-dimension KL for these families
  # Holes are measured against the run's own prior; an IAF posterior has distances only.
  assert ('prior_hole_fraction' in result['latent']) == ('iaf' not in family)
  assert result['latent']['nn_distance_ratio'] > 0
  if 'two_layer' in family:
    assert {'kl_z1', 'kl_z2', 'active_units_z1', 'active_units_z2'} <= set(result)
    assert 'KL z1 / z2' in out and 'active units z1 / z2' in out
  if family == 'two_layer_vamp':  # every figure of scripts/visualize.py draws for the family
    rc, _, err = run_script('visualize', '--workdir', workdir, '--what', 'all', '--out',
                            tmp_path / 'vis.png', '--num_examples', '200', '--grid', '5')
    assert rc == 0, err
    assert len(list(tmp_path.glob('vis_*.png'))) >= 6
  if family == 'mog':  # the reparameterization study is for the analytic family only
    rc, _, err = run_script('gradient_variance', '--workdir', workdir, '--out',
                            tmp_path / 'g.png')
    assert rc == 2 and 'the gradient study takes the diagonal Gaussian' in err
  model = vae.load(workdir)
  assert model.sample(jax.random.key(0), 4).shape == (4, 28, 28, 1)
  assert model.reconstruct(model.load_split('test')[0][:3]).shape == (3, 28, 28, 1)


def test_compare_runs_pairs_rows_over_the_same_test_images(smoke_run, tmp_path):
  """Copies of one trained run evaluated with two seeds: the paired difference of a run with
  itself is exactly 0, two evaluation seeds differ by a small paired SE, a two-seed row
  reports its spread, and runs evaluated differently are refused with one line."""
  import shutil  # pylint: disable=g-import-not-at-top
  dirs = []
  for seed in (0, 1):
    d = tmp_path / f'run{seed}'
    shutil.copytree(smoke_run[0], d)
    rc, _, err = run_script('evaluate', '--workdir', d, '--num_samples', '20', '--max_examples',
                            '64', '--seed', str(seed))
    assert rc == 0, err
    dirs.append(d)
  out = tmp_path / 'table.md'
  rc, text, err = run_script('compare_runs', '--row', f'a={dirs[0]}', '--row', f'same={dirs[0]}',
                             '--row', f'b={dirs[1]}', '--row', f'both={dirs[0]},{dirs[1]}',
                             '--out', out)
  assert rc == 0, err
  rows = {r['name']: r for r in json.loads((tmp_path / 'table.md.json').read_text())}
  assert rows['same']['diff_vs_reference'] == 0 and rows['same']['diff_se'] == 0
  ll = [np.load(d / 'eval.npz')['log_likelihood'] for d in dirs]
  assert rows['b']['diff_vs_reference'] == pytest.approx(float(np.mean(ll[1] - ll[0])), abs=1e-9)
  assert 0 < rows['b']['diff_se'] < 1.0
  assert rows['both']['log_likelihood_sd_over_seeds'] > 0 and rows['both']['seeds'] == [0, 0]
  assert out.read_text() == text and text.count('\n') == 8  # 6 table lines, a blank, a caption
  assert 'Every figure: the same 64 test images' in text and 'k = 20 importance samples' in text
  # A sweep member's directory holds commas; a row named twice gathers both DIRs.
  member = tmp_path / 'prior=vamp,seed=0'
  shutil.copytree(dirs[1], member)
  rc, text, err = run_script('compare_runs', '--row', f'a={dirs[0]}', '--row', f'm={member}',
                             '--row', f'two={member},{dirs[0]}', '--row', f'two2={member}',
                             '--row', f'two2={dirs[0]}', '--out', out)
  assert rc == 0, err
  rows = {r['name']: r for r in json.loads((tmp_path / 'table.md.json').read_text())}
  assert rows['m']['diff_vs_reference'] == pytest.approx(float(np.mean(ll[1] - ll[0])),
                                                         abs=1e-9)
  assert rows['two']['seeds'] == rows['two2']['seeds'] == [0, 0] and len(rows) == 4
  # Evaluated on 32 and 64 images: paired on the 32 they share (eval.npz's image_index; a
  # file without it, written before, covers the first num_examples images).
  rc, _, err = run_script('evaluate', '--workdir', member, '--num_samples', '20',
                          '--max_examples', '32', '--seed', '1')
  assert rc == 0, err
  assert np.array_equal(np.load(member / 'eval.npz')['image_index'], np.arange(32))
  ll_m = np.load(member / 'eval.npz')['log_likelihood']
  with np.load(dirs[0] / 'eval.npz') as z:
    np.savez(dirs[0] / 'eval.npz', log_likelihood=z['log_likelihood'])  # an older file
  rc, text, err = run_script('compare_runs', '--row', f'a={dirs[0]}', '--row', f'm={member}',
                             '--out', out)
  assert rc == 0, err
  rows = {r['name']: r for r in json.loads((tmp_path / 'table.md.json').read_text())}
  assert rows['m']['diff_vs_reference'] == pytest.approx(float(np.mean(ll_m - ll[0][:32])),
                                                         abs=1e-9)
  assert 'the paired differences over the 32 images every run shares' in text
  assert 'Paired over 32 images.' in text
  rc, _, err = run_script('evaluate', '--workdir', dirs[1], '--num_samples', '10',
                          '--max_examples', '64')
  assert rc == 0, err
  rc, _, err = run_script('compare_runs', '--row', f'a={dirs[0]}', '--row', f'b={dirs[1]}')
  assert rc == 2 and 'another sample count' in err and err.count('\n') == 1
  rc, _, err = run_script('compare_runs', '--row', f'a={tmp_path}')
  assert rc == 2 and 'has no eval.json' in err


def test_a_gaussian_on_dequantized_pixels_reports_bits_per_dim_with_the_8_bit_offset(tmp_path):
  """Training's evaluation and scripts/evaluate.py give a density on dequantized pixels
  -log2 p / D + 8 bits/dim; the same model on pixels that were not dequantized has no
  bits/dim (summarize_sums leaves it out; the report says why)."""
  over = {'model.likelihood': 'gaussian', 'data.binarize': 'none', 'data.dequantize': True,
          'train.num_epochs': 1.0}
  from vae.training import loop  # pylint: disable=g-import-not-at-top
  result = loop.train_and_evaluate(smoke_config(**over), str(tmp_path))
  d = 28 * 28
  assert result['test/bpd'] == pytest.approx(-result['test/elbo'] / (d * math.log(2)) + 8.0)
  code, out, _ = run_script('evaluate', '--workdir', tmp_path, '--num_samples', 4,
                            '--max_examples', 64)
  assert code == 0, out
  assert 'NLL bits/dim' in out
  saved = json.loads((tmp_path / 'eval.json').read_text())
  assert saved['nll_bpd'] == pytest.approx(saved['nll'] / (d * math.log(2)) + 8.0)
  sums = {'count': 2.0, 'elbo': 3000.0, 'recon': 3100.0, 'kl': 100.0,
          'z_mean_sum': np.zeros(3), 'z_mean_sq_sum': np.ones(3)}
  assert 'test/bpd' not in estimates.summarize_sums(sums, d, 'test', bpd_offset=None)
  from vae.evaluation import report  # pylint: disable=g-import-not-at-top
  assert report.format_bpd(None).startswith('no bits/dim') and report.format_bpd(1.5) == '1.5000'

