"""Shared pytest options: `--run-slow` enables the long statistical tests."""

import pytest


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
  from tests.test_trainer import smoke_config  # pylint: disable=g-import-not-at-top
  from vae import trainer  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('smoke_run')
  result = trainer.train_and_evaluate(smoke_config(), str(workdir))
  return workdir, result


@pytest.fixture(scope='session')
def slow_reference(tmp_path_factory):
  """An uninterrupted train.py run with SLOW_FLAGS, the reference for kill tests."""
  from tests.test_trainer import SLOW_FLAGS, _run  # pylint: disable=g-import-not-at-top
  ref = tmp_path_factory.mktemp('slow_reference')
  assert _run(ref, *SLOW_FLAGS).returncode == 0
  return ref


@pytest.fixture(scope='session')
def smoke_pair(tmp_path_factory):
  """The matched VAE / autoencoder pair of configs/ae_vs_vae.py (2 latents), smoke-sized."""
  from configs import ae_vs_vae  # pylint: disable=g-import-not-at-top
  from vae import trainer  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('pair')
  for kind in ('vae', 'ae'):
    trainer.train_and_evaluate(ae_vs_vae.get_config(f'model={kind},smoke'), str(root / kind))
  return root
