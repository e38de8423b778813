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
from tests import plugins
from tests.helpers import REPO, final_params, read_events, smoke_config
from vae.families import priors
from vae.training import loop

LAPLACE = {'model.prior': 'laplace_test', 'train.checkpoint_every_epochs': 0.5}


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setattr(priors, 'REGISTRY', dict(priors.REGISTRY))
  plugins.register()


def test_a_laplace_prior_trains_resumes_after_a_kill_loads_and_evaluates(registered, tmp_path):
  del registered
  ref = tmp_path / 'straight'
  result = loop.train_and_evaluate(smoke_config(**LAPLACE), str(ref))
  assert result['status'] == 'finished' and math.isfinite(result['test/elbo'])
  # Killed while the checkpoint of step 18 is being written, in a process that imports the
  # plugin module; then resumed here.
  work = tmp_path / 'killed'
  env = dict(os.environ, VAE_INJECT_KILL_DURING_SAVE='18', VAE_INJECT_KILL_DELAY_S='0.005')
  proc = subprocess.run([sys.executable, '-m', 'tests.plugins', str(work),
                         *(f'{k}={v}' for k, v in LAPLACE.items())],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == -9, proc.stderr[-2000:]
  loop.train_and_evaluate(smoke_config(**LAPLACE), str(work))
  assert read_events(work) == read_events(ref)
  chex.assert_trees_all_equal(final_params(work)[1], final_params(ref)[1])
  # Loaded: its prior is the plugin's Laplace density, and importance sampling runs on it.
  model = vae.load(work, 'latest')
  d = model.model.latent_dim
  z = jnp.linspace(-1.2, 0.3, d)[None]
  np.testing.assert_allclose(model.log_prior(z),
                             -np.sum(np.abs(np.asarray(z))) / 0.5 - d * math.log(2 * 0.5),
                             rtol=1e-6)
  draws = np.asarray(model.sample_prior(jax.random.key(0), 20000))
  assert np.mean(np.abs(draws)) == pytest.approx(0.5, rel=0.03)  # E|z| = b for Laplace(0, b)
  x = model.load_split('test')[0][:32]
  elbo = np.asarray(model.elbo(x, jax.random.key(1)))
  log_px = np.asarray(model.log_likelihood(x, num_samples=200, key=jax.random.key(2)))
  assert np.all(np.isfinite(log_px)) and np.mean(log_px) > np.mean(elbo)


def test_a_laplace_prior_trains_as_a_vmapped_group_of_two(registered, tmp_path):
  del registered
  configs = [smoke_config(**LAPLACE, seed=s) for s in (0, 1)]
  results = loop.train_members(configs, [str(tmp_path / f's{s}') for s in (0, 1)],
                               str(tmp_path / 'group'))
  assert [r['status'] for r in results] == ['finished', 'finished']
  alone = tmp_path / 'alone'
  loop.train_and_evaluate(smoke_config(**LAPLACE, seed=1), str(alone))
  for a, b in zip(read_events(tmp_path / 's1'), read_events(alone)):
    for key, value in b.items():
      if key.startswith(('train/', 'val/', 'test/')):
        assert a[key] == pytest.approx(value, rel=2e-4, abs=2e-4), key
