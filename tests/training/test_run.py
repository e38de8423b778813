"""Tests of vae/training/run.py: one run's moments (start, resume, train and eval logs, early stopping,
checkpoints ranked by validation, the end), without compiling a model."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

from tests import helpers
from vae.training import metrics_io, run as run_lib
from vae.training import step as step_lib

INFO = {'name': 'synthetic', 'shape': [28, 28, 1], 'source': 'synthetic', 'files': []}


def _state(value):
  return step_lib.TrainState(step=jnp.int32(value),
                             params={'w': jnp.full((2,), value, jnp.float32)},
                             opt_state={}, ema_params={}, rng=jax.random.PRNGKey(0))


def _evals(run, elbos, patience, every=10, test=None):
  """Logs evaluations at steps every, 2 every, ... and saves each; returns the stop step."""
  for i, v in enumerate(elbos):
    step = (i + 1) * every
    metrics = {'val/elbo': v, 'test/elbo': (test or elbos)[i]}
    run.log_train(step, step / every, step * 4, {'loss': -v})
    stop = run.log_eval(step, step / every, step * 4, metrics, patience)
    run.save(step, _state(step))
    if stop:
      return step
  return None


def test_selection_is_by_validation_and_never_by_test():
  assert run_lib.selection_elbo({'val/elbo': -3.0, 'test/elbo': -1.0}) == -3.0
  assert run_lib.selection_elbo({'test/elbo': -1.0}) is None
  assert run_lib.selection_elbo({'train/elbo': -1.0}) is None
  events = [{'event': 'eval', 'step': 10, 'val/elbo': -5.0},
            {'event': 'train', 'step': 20, 'train/elbo': 0.0, 'val/elbo': 9.0},
            {'event': 'eval', 'step': 20, 'val/elbo': -2.0, 'test/elbo': -9.0},
            {'event': 'eval', 'step': 30, 'val/elbo': -1.0}]
  assert run_lib.best_event(events) == (-1.0, 30)
  assert run_lib.best_event(events, upto=25) == (-2.0, 20)
  assert run_lib.best_event([], upto=5) == (-math.inf, 0)


def test_a_run_stops_after_its_patience_keeps_the_best_and_records_its_end(tmp_path):
  c = helpers.smoke_config()
  run = run_lib.Run(c, tmp_path)
  assert not run.stopped
  run.start(INFO, keep=2)
  run.resume(None)
  # Validation peaks at step 20; the test ELBO would pick step 50.
  stop = _evals(run, [-9.0, -4.0, -5.0, -6.0, -7.0], patience=30,
                test=[-9.0, -8.0, -7.0, -6.0, -1.0])
  assert stop == 50
  assert run.best == (-4.0, 20)
  assert run.checkpointer.best_step() == 20
  assert run.checkpointer.steps() == [20, 40, 50]  # the 2 newest and the best
  run.stop_early(stop)
  result = run.finish(stop, None)
  run.close()
  assert result['status'] == 'early_stopped' and result['step'] == 50
  assert json.loads((tmp_path / 'done.json').read_text())['status'] == 'early_stopped'
  assert json.loads((tmp_path / 'config.json').read_text()) == run.config_json
  assert json.loads((tmp_path / 'run.json').read_text())['sessions'][-1]['end_step'] == 50
  again = run_lib.Run(c, tmp_path)  # a later session sees the run ended
  assert again.stopped and again.last['step'] == 50 and again.last['val/elbo'] == -7.0


def test_a_resumed_run_replays_its_best_and_drops_later_events(tmp_path):
  c = helpers.smoke_config(**{'train.num_epochs': 9.0})
  run = run_lib.Run(c, tmp_path)
  run.start(INFO, keep=5)
  run.resume(None)
  assert _evals(run, [-9.0, -3.0, -5.0, -6.0], patience=0) is None
  run.close()  # killed after step 40; resumed at the checkpoint of step 30
  run = run_lib.Run(c, tmp_path)
  run.start(INFO, keep=5)
  run.resume(30)
  assert run.best == (-3.0, 20)
  steps = [e['step'] for e in metrics_io.read_metrics(tmp_path / 'metrics.jsonl')]
  assert max(steps) == 30
  # Patience counts from the replayed best: 30 steps after step 20 is step 50.
  assert not run.log_eval(40, 4.0, 160, {'val/elbo': -4.0}, 30)
  assert run.log_eval(50, 5.0, 200, {'val/elbo': -3.5}, 30)
  run.close()


def test_a_checkpoint_without_an_evaluation_is_never_the_best(tmp_path):
  run = run_lib.Run(helpers.smoke_config(), tmp_path)
  run.start(INFO, keep=1)
  run.resume(None)
  run.log_eval(10, 1.0, 40, {'val/elbo': -2.0}, 0)
  run.save(10, _state(10))
  run.save(15, _state(15))  # a checkpoint between evaluations (e.g. at a signal)
  assert run.checkpointer.best_step() == 10
  assert run.checkpointer.steps() == [10, 15]
  run.close()


def test_a_schedule_that_follows_the_run_length_refuses_a_new_length_on_resume(tmp_path):
  """Cosine decays over train.num_epochs: resuming with another length would silently change
  the learning rate of every step still to come (the constant schedule may grow)."""
  from tests.helpers import smoke_config  # pylint: disable=g-import-not-at-top
  from vae import config_lib  # pylint: disable=g-import-not-at-top
  from vae.training import loop  # pylint: disable=g-import-not-at-top
  work = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{'optim.schedule': 'cosine',
                                          'train.num_epochs': 1.0}), str(work))
  before = sorted(p.name for p in work.rglob('*'))
  with pytest.raises(config_lib.ConfigError,
                     match=r'optim.schedule=cosine.*train.num_epochs=1.0 there, 2.0 now'):
    loop.train_and_evaluate(smoke_config(**{'optim.schedule': 'cosine',
                                            'train.num_epochs': 2.0}), str(work))
  assert sorted(p.name for p in work.rglob('*')) == before
  constant = tmp_path / 'c'
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0}), str(constant))
  assert loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 2.0}),
                                 str(constant))['step'] == 24
