"""The boundary's periodic actions (vae/training/actions.py) as the driver runs them."""

import numpy as np

from tests.helpers import read_events, smoke_config
from vae.training import actions, loop


class Recorder(actions.Action):
  """A researcher's action: what it sees at every boundary, after the built-in ones."""
  name = 'recorder'

  def __init__(self):
    self.seen = []

  def finish(self, driver, b):
    run = driver.runs[0]
    self.seen.append({'step': b.step, 'eval': b.captured['evaluate'] is not None,
                      'due': b.checkpoint_due, 'snapshots': sorted(b.captured['snapshot']),
                      'loss': float(np.asarray(b.means['loss'])),
                      'logged_loss': run.last.get('train/loss')})


def test_an_added_action_sees_every_boundary_after_the_built_in_ones(tmp_path, monkeypatch):
  recorder = Recorder()
  built_in = actions.default_actions
  monkeypatch.setattr(actions, 'default_actions', lambda: built_in() + [recorder])
  result = loop.train_and_evaluate(smoke_config(), str(tmp_path))
  assert result['status'] == 'finished'
  seen = recorder.seen
  assert [s['step'] for s in seen] == list(range(4, 25, 4))  # each log window's boundary
  assert [s['step'] for s in seen if s['eval']] == [12, 24]
  assert [s['step'] for s in seen if s['due']] == [12, 24]  # one checkpoint per epoch
  assert all(s['snapshots'] == ([0] if s['eval'] or s['due'] else []) for s in seen)
  # It runs after TrainMetrics: the run has logged this boundary's loss, the chunk's mean.
  train = [e for e in read_events(tmp_path) if e['event'] == 'train']
  assert [s['logged_loss'] for s in seen] == [e['train/loss'] for e in train]
  np.testing.assert_allclose([s['loss'] for s in seen], [e['train/loss'] for e in train],
                             rtol=1e-6)
