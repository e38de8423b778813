"""Families register: a prior, a likelihood and an evaluation metric defined here, in the
test, train and evaluate from the command line's code paths with no edit under vae/."""

import json
import math

import flax.linen as nn
import jax.numpy as jnp
import pytest

from tests import helpers
from tests.helpers import read_events, run_script, smoke_config
from vae import config_lib
from vae.training import estimates
from vae.families import likelihoods, priors
from vae.sweeps import runner
from vae.training import loop


class WidePrior(nn.Module, priors.GaussianMixturePrior):
  """N(0, 4 I) as a one-component mixture: a prior that vae/ does not define."""
  latent_dim: int

  def components(self, ctx):
    del ctx
    d = self.latent_dim
    return jnp.zeros((1,)), jnp.zeros((1, d)), jnp.full((1, d), math.log(4.0))


class Laplace(likelihoods.Family):
  """Laplace(x; loc, 0.1) per pixel on grey levels: a likelihood that vae/ does not define."""
  name = 'laplace_test'

  def params(self, lik, raw, learned_log_scale):
    return {'loc': raw}

  def log_prob_per_pixel(self, lik, params, x):
    b = 0.1
    return -jnp.abs(x - params['loc']) / b - math.log(2.0 * b)

  def mean(self, lik, params):
    return params['loc']


@pytest.fixture
def registries(monkeypatch):
  """Registration into copies of the registries, restored after the test."""
  monkeypatch.setattr(priors, 'REGISTRY', dict(priors.REGISTRY))
  monkeypatch.setattr(likelihoods, 'REGISTRY', dict(likelihoods.REGISTRY))
  monkeypatch.setattr(config_lib, 'PIXEL_PROTOCOLS', dict(config_lib.PIXEL_PROTOCOLS))
  monkeypatch.setattr(estimates, 'EVAL_SUMS', dict(estimates.EVAL_SUMS))


def test_a_registered_prior_and_likelihood_train_and_evaluate(registries, tmp_path):
  del registries
  priors.register('wide_test', lambda mc, image_shape: WidePrior(mc.latent_dim))
  likelihoods.register(Laplace(), 'continuous')
  assert config_lib.binarize_for('laplace_test') == 'none'
  w = tmp_path / 'w'
  result = loop.train_and_evaluate(smoke_config(**{
      'model.prior': 'wide_test', 'model.likelihood': 'laplace_test', 'data.binarize': 'none'}),
                                   str(w))
  assert result['status'] == 'finished' and math.isfinite(result['test/elbo'])
  _, params = helpers.final_params(w)
  assert not any('prior' in path for path in helpers.leaves(params))  # it has no parameters
  code, _, err = run_script('evaluate', '--workdir', w, '--num_samples', '20', '--max_examples',
                            '64')
  assert code == 0, err
  report = json.loads((w / 'eval.json').read_text())
  assert report['log_likelihood'] > report['elbo']
  # An unregistered name is still a one-line config error naming the registered ones.
  with pytest.raises(config_lib.ConfigError, match='wide_test'):
    from vae.training import validation  # pylint: disable=g-import-not-at-top
    validation.validate(smoke_config(**{'model.prior': 'nosuch'}))


def test_a_registered_metric_with_a_latent_axis_is_cut_to_each_padded_member(registries, tmp_path):
  """Members of latent sizes 3 and 5 in one vmapped program (3 padded to 5): the metric's
  producer declares its latent axis, and each member reports its own dimensions."""
  del registries
  estimates.register_eval_sum(estimates.EvalSum(
      'z_abs_test', lambda model, variables, x, mean, logvar, terms: jnp.abs(mean),
      latent_axis=True,
      summarize=lambda value, n, split: {f'{split}/z_abs_dims': len(value),
                                         f'{split}/z_abs_mean': float(value.sum() / n)}))
  assert 'z_abs_test' in estimates.latent_axis_sums()
  root = tmp_path / 'sweep'
  record = runner.run_sweep('configs/default.py:smoke,sweep=tiny', root, mode='vmap',
                            axes={'model.latent_dim': ['3', '5'], 'objective.beta': ['0.5']})
  members = record.data['members']
  assert len(members) == 2 and all(m['status'] == 'finished' for m in members)
  for m in members:
    latent = m['overrides']['model.latent_dim']
    evals = [e for e in read_events(root / m['name']) if e['event'] == 'eval']
    assert evals and all(e['test/z_abs_dims'] == latent for e in evals)
    assert all(e['test/z_abs_mean'] > 0 for e in evals)
