"""Extensions in one file: families defined outside vae/ (tests/plugins.py) train alone and
as a vmapped group, resume bit-identically after a SIGKILL mid-save, load with `vae.load`
and evaluate with importance sampling, with no edit under vae/."""

import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae
from tests import plugins, record_fixtures
from tests.helpers import REPO, final_params, read_events, smoke_config
from vae import config_lib
from vae.families import objective_families, priors
from vae.training import loop, validation

PRIORS = ('laplace_test', 'bank_test')
FAMILIES = PRIORS + ('factor_test',)


def _overrides(family):
  field = 'objective.name' if family == 'factor_test' else 'model.prior'
  return {field: family, 'train.checkpoint_every_epochs': 0.5}


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setattr(priors, 'REGISTRY', dict(priors.REGISTRY))
  monkeypatch.setattr(objective_families, 'REGISTRY', dict(objective_families.REGISTRY))
  monkeypatch.setattr(config_lib, 'DECLARED', dict(config_lib.DECLARED))
  plugins.register()


@pytest.mark.parametrize('family', FAMILIES)
def test_a_plugin_family_resumes_bit_identically_after_a_kill_and_evaluates(registered, family,
                                                                            tmp_path):
  del registered
  prior = family
  ref = tmp_path / 'straight'
  result = loop.train_and_evaluate(smoke_config(**_overrides(prior)), str(ref))
  assert result['status'] == 'finished' and math.isfinite(result['test/elbo'])
  # Killed while the checkpoint of step 18 is being written, in a process that imports the
  # plugin module; then resumed here.
  work = tmp_path / 'killed'
  env = dict(os.environ, VAE_INJECT_KILL_DURING_SAVE='18', VAE_INJECT_KILL_DELAY_S='0.005')
  proc = subprocess.run([sys.executable, '-m', 'tests.plugins', str(work),
                         *(f'{k}={v}' for k, v in _overrides(prior).items())],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == -9, proc.stderr[-2000:]
  loop.train_and_evaluate(smoke_config(**_overrides(prior)), str(work))
  assert read_events(work) == read_events(ref)
  chex.assert_trees_all_equal(final_params(work)[1], final_params(ref)[1])
  chex.assert_trees_all_equal(record_fixtures.final_state_leaves(work, 24),
                              record_fixtures.final_state_leaves(ref, 24))
  # Loaded and evaluated with importance sampling (log p(x) above the ELBO).
  model = vae.load(work, 'latest')
  x = model.load_split('test')[0][:32]
  elbo = np.asarray(model.elbo(x, jax.random.key(1)))
  log_px = np.asarray(model.log_likelihood(x, num_samples=200, key=jax.random.key(2)))
  assert np.all(np.isfinite(log_px)) and np.mean(log_px) > np.mean(elbo)


def test_a_laplace_prior_loads_with_its_density_and_sampler(registered, tmp_path):
  del registered
  loop.train_and_evaluate(smoke_config(**_overrides('laplace_test')), str(tmp_path))
  model = vae.load(tmp_path, 'latest')
  d = model.model.latent_dim
  z = jnp.linspace(-1.2, 0.3, d)[None]
  np.testing.assert_allclose(model.log_prior(z),
                             -np.sum(np.abs(np.asarray(z))) / 0.5 - d * math.log(2 * 0.5),
                             rtol=1e-6)
  draws = np.asarray(model.sample_prior(jax.random.key(0), 20000))
  assert np.mean(np.abs(draws)) == pytest.approx(0.5, rel=0.03)  # E|z| = b for Laplace(0, b)


def test_a_prior_with_state_keeps_its_bank_in_the_train_state_and_vae_load(registered,
                                                                            tmp_path):
  """The bank holds the last 128 encoder means (two smoke batches of 64): after 24 steps
  it is full and not zero; vae.load restores it, and the loaded prior is the mixture over
  it with the learned variance."""
  del registered
  loop.train_and_evaluate(smoke_config(**_overrides('bank_test')), str(tmp_path))
  state = record_fixtures.final_state_leaves(tmp_path, 24)
  bank = state["['prior_state']['means']"]
  assert bank.shape == (128, 20) and np.all(np.any(bank != 0, axis=1))
  assert int(state["['prior_state']['next']"]) == (24 * 64) % 128
  model = vae.load(tmp_path, 'latest')
  np.testing.assert_array_equal(model.prior_state['means'], bank)
  log_var = float(model.params['prior']['log_variance'])
  z = jnp.asarray(bank[:3]) + 0.1
  want = jax.nn.logsumexp(
      -0.5 * np.sum((np.asarray(z)[:, None] - bank[None]) ** 2, -1) / np.exp(log_var)
      - 0.5 * 20 * (np.log(2 * np.pi) + log_var), axis=1) - np.log(128)
  np.testing.assert_allclose(model.log_prior(z), want, rtol=1e-5)


@pytest.mark.parametrize('prior', FAMILIES)
def test_a_plugin_family_trains_as_a_vmapped_group_of_two(registered, prior, tmp_path):
  """Each member of the group matches its run alone. The objective's members also differ in
  objective.tc_gamma (declared vmappable by the plugin): member 1 can match its run alone
  only if its own gamma reached the step, traced, beside member 0's."""
  del registered
  gammas = {'objective.tc_gamma': (0.0, 20.0)} if prior == 'factor_test' else {}
  configs = [smoke_config(**_overrides(prior), seed=s, **{k: v[s] for k, v in gammas.items()})
             for s in (0, 1)]
  results = loop.train_members(configs, [str(tmp_path / f's{s}') for s in (0, 1)],
                               str(tmp_path / 'group'))
  assert [r['status'] for r in results] == ['finished', 'finished']
  alone = tmp_path / 'alone'
  loop.train_and_evaluate(configs[1], str(alone))
  for a, b in zip(read_events(tmp_path / 's1'), read_events(alone)):
    for key, value in b.items():
      if key.startswith(('train/', 'val/', 'test/')):
        assert a[key] == pytest.approx(value, rel=2e-4, abs=2e-4), key


def test_an_objective_with_an_auxiliary_network_trains_it_with_its_own_optimizer(registered,
                                                                                tmp_path):
  """The discriminator's parameters and Adam moments live in the train state and its
  checkpoints; they change with training; its loss and the TC term are logged."""
  del registered
  loop.train_and_evaluate(smoke_config(**_overrides('factor_test')), str(tmp_path))
  state = record_fixtures.final_state_leaves(tmp_path, 24)
  aux = {k: v for k, v in state.items() if k.startswith("['objective_state']['params']")}
  moments = [k for k in state if k.startswith("['objective_state']['opt_state']")]
  assert len(aux) == 6 and moments  # three Dense layers' kernels and biases
  # Initialized from its own key (fold_in(init, 2)), then moved by 24 Adam steps of its own.
  init_key = jax.random.fold_in(jax.random.split(jax.random.PRNGKey(0), 5)[0], 2)
  init = plugins.Discriminator().init(init_key, jnp.zeros((1, 20)))['params']
  kernel = aux["['objective_state']['params']['Dense_0']['kernel']"]
  assert kernel.shape == init['Dense_0']['kernel'].shape
  assert 0 < np.max(np.abs(kernel - np.asarray(init['Dense_0']['kernel']))) < 0.2
  counts = [v for k, v in state.items() if k.startswith("['objective_state']['opt_state']")
            and k.endswith("['count']")]
  assert counts and all(int(c) == 24 for c in counts)
  events = [e for e in read_events(tmp_path) if 'train/aux_loss' in e]
  assert len(events) >= 6 and all(math.isfinite(e['train/tc']) for e in events)
  assert all(0.3 < e['train/aux_loss'] < 1.5 for e in events)  # near log 2: a contest
  assert 0 <= events[-1]['train/disc_accuracy'] <= 1


def test_an_unregistered_objective_is_refused_in_one_line(registered):
  del registered
  with pytest.raises(config_lib.ConfigError, match="objective.name='no_such'; choose one of"):
    validation.validate(smoke_config(**{'objective.name': 'no_such'}))
  validation.validate(smoke_config(**{'objective.name': 'factor_test'}))
