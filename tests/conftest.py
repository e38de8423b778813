"""Pytest setup: `--run-slow` for the long statistical tests, and the fixtures several test
modules share (trained runs, the linear-Gaussian model)."""

import pytest

from configs import ae_vs_vae
from tests import helpers, linear_gaussian
from vae.training import loop


def pytest_addoption(parser):
  parser.addoption('--run-slow', action='store_true', help='run tests marked slow')


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long statistical test; run with --run-slow')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--run-slow'):
    return
  skip = pytest.mark.skip(reason='slow statistical test: run with --run-slow (make test-all)')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)


# Trained runs shared by several test modules (each costs seconds to compile and train).


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
  """The default smoke config trained for 2 epochs (24 steps; checkpoints at 12 and 24)."""
  workdir = tmp_path_factory.mktemp('smoke_run')
  result = loop.train_and_evaluate(helpers.smoke_config(), str(workdir))
  return workdir, result


@pytest.fixture(scope='session')
def slow_reference(tmp_path_factory):
  """An uninterrupted train.py run with SLOW_FLAGS, the reference for kill tests."""
  ref = tmp_path_factory.mktemp('slow_reference')
  assert helpers.run_train(ref, *helpers.SLOW_FLAGS).returncode == 0
  return ref


@pytest.fixture(scope='session')
def smoke_pair(tmp_path_factory):
  """The matched VAE / autoencoder pair of configs/ae_vs_vae.py (2 latents), smoke-sized."""
  root = tmp_path_factory.mktemp('pair')
  for kind in ('vae', 'ae'):
    loop.train_and_evaluate(ae_vs_vae.get_config(f'model={kind},smoke'), str(root / kind))
  return root


@pytest.fixture(scope='module')
def lg():
  """The linear-Gaussian VAE with a closed-form log p(x) (tests/linear_gaussian.py)."""
  return linear_gaussian.make_problem()
