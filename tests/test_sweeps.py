"""Tests of sweeps: expansion, vmapped-vs-alone equivalence, skip and resume, summaries."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vae
from scripts import plot_curves, summarize, sweep
from tests.test_trainer import REPO, _events, smoke_config
from vae import config_lib, multi_model, sweeps, trainer

SPEC = 'configs/default.py:smoke,sweep=tiny'


def test_expansion_helpers():
  members = sweeps.product(**{'model.latent_dim': [2, 5], 'objective.beta': [1.0, 4.0]})
  assert len(members) == 4 and members[1] == {'model.latent_dim': 2, 'objective.beta': 4.0}
  assert sweeps.zip_axes(a=[1, 2], b=[3, 4]) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(config_lib.ConfigError):
    sweeps.zip_axes(a=[1, 2], b=[3])
  assert sweeps.member_name({'model.latent_dim': 2, 'seed': 1}) == 'latent_dim=2,seed=1'
  c = sweeps.apply_overrides(smoke_config(), {'objective.beta': 4, 'seed': 3})
  assert c.objective.beta == 4.0 and isinstance(c.objective.beta, float) and c.seed == 3
  with pytest.raises(config_lib.ConfigError, match='not a config field'):
    sweeps.apply_overrides(smoke_config(), {'objective.nope': 1})
  with pytest.raises(config_lib.ConfigError, match='vmap mode cannot stack'):
    multi_model.check_vmappable([smoke_config(), smoke_config(**{'train.batch_size': 32})])


def test_resize_latent_pads_mean_and_logvar_halves():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  head = {'gaussian_head': {'kernel': jnp.arange(8.0).reshape(2, 4), 'bias': jnp.arange(4.0)}}
  target = {'gaussian_head': {'kernel': jnp.zeros((2, 6)), 'bias': jnp.zeros(6)}}
  out = multi_model.resize_latent(head, target)
  np.testing.assert_array_equal(out['gaussian_head']['bias'], [0, 1, 0, 2, 3, 0])
  back = multi_model.resize_latent(out, head)
  np.testing.assert_array_equal(back['gaussian_head']['kernel'], head['gaussian_head']['kernel'])


@pytest.fixture(scope='module')
def vmapped(tmp_path_factory):
  root = tmp_path_factory.mktemp('sweep')
  record = sweep.run_sweep(SPEC, root, mode='vmap')
  assert all(m['status'] == 'finished' for m in record.data['members'])
  return root


@pytest.mark.parametrize('name,overrides', [
    ('latent_dim=3,beta=2.0', {'model.latent_dim': 3, 'objective.beta': 2.0}),  # padded 3 -> 5
    ('latent_dim=5,beta=2.0,seed=1', {'model.latent_dim': 5, 'objective.beta': 2.0,
                                      'seed': 1}),
])
def test_vmapped_member_matches_member_trained_alone(vmapped, tmp_path, name, overrides):
  alone = tmp_path / 'alone'
  trainer.train_and_evaluate(sweeps.apply_overrides(smoke_config(), overrides), str(alone))
  ev_v, ev_a = _events(vmapped / name), _events(alone)
  assert [(e['event'], e['step']) for e in ev_v] == [(e['event'], e['step']) for e in ev_a]
  for a, b in zip(ev_v, ev_a):
    for key, value in b.items():
      if key.startswith(('train/', 'val/', 'test/')):
        assert a[key] == pytest.approx(value, rel=2e-4, abs=2e-4), (key, a[key], value)
  pv, pa = vae.load(vmapped / name, 'latest'), vae.load(alone, 'latest')
  assert pv.latent_dim == overrides['model.latent_dim']  # exported unpadded
  for x, y in zip(_leaves(pv.params), _leaves(pa.params)):
    np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-4)


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(v) for v in jax.tree.leaves(tree)]


def test_members_spread_over_a_model_mesh_axis_match(vmapped, tmp_path):
  """4 members on 8 fake devices: a ('model': 4, 'data': 2) mesh, same results."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, str(REPO / 'scripts' / 'sweep.py'), '--config',
                        'configs/default.py:smoke,sweep=tiny4', '--workdir', str(tmp_path),
                        '--mode', 'vmap'], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((tmp_path / '_vmap_group_0' / 'mesh.json').read_text()) == {
      'model': 4, 'data': 2}
  for name in ('latent_dim=3,beta=0.5', 'latent_dim=5,beta=2.0'):
    for a, b in zip(_events(tmp_path / name), _events(vmapped / name)):
      assert (a['event'], a['step']) == (b['event'], b['step'])
      for key, value in b.items():
        if key.startswith(('train/', 'test/')):
          assert a[key] == pytest.approx(value, rel=1e-3, abs=1e-3), (name, key)


def test_finished_members_are_skipped(vmapped, capsys):
  before = {d.name: (d / 'metrics.jsonl').read_text() for d in vmapped.iterdir()
            if (d / 'metrics.jsonl').exists()}
  sweep.run_sweep(SPEC, vmapped, mode='sequential', dry_run=True)
  assert '0 to run' in capsys.readouterr().out
  sweep.run_sweep(SPEC, vmapped, mode='sequential')
  after = {d.name: (d / 'metrics.jsonl').read_text() for d in vmapped.iterdir()
           if (d / 'metrics.jsonl').exists()}
  assert before == after


def test_interrupted_member_resumes(tmp_path):
  root = tmp_path / 'root'
  name = 'latent_dim=3,beta=0.5'
  overrides = {'model.latent_dim': 3, 'objective.beta': 0.5}
  # An interrupted member: trained to step 12 of 24 (a checkpoint, no done.json).
  first = sweeps.apply_overrides(smoke_config(**{'train.num_epochs': 1.0}), overrides)
  trainer.train_and_evaluate(first, str(root / name))
  (root / name / 'done.json').unlink()
  (root / name / 'config.json').write_text(json.dumps(trainer.config_json(
      sweeps.apply_overrides(smoke_config(), overrides))))
  for other in ('latent_dim=3,beta=2.0', 'latent_dim=5,beta=0.5', 'latent_dim=5,beta=2.0',
                'latent_dim=5,beta=2.0,seed=1'):  # finished members are skipped
    (root / other).mkdir()
    (root / other / 'done.json').write_text(json.dumps({'num_epochs': 2.0}))
  record = sweep.run_sweep(SPEC, root, mode='sequential')
  assert all(m['status'] == 'finished' for m in record.data['members'])
  assert not (root / 'latent_dim=5,beta=0.5' / 'metrics.jsonl').exists()
  events = _events(root / name)
  assert [e['step'] for e in events if e['event'] == 'eval'] == [12, 24]
  straight = tmp_path / 'straight'
  trainer.train_and_evaluate(sweeps.apply_overrides(smoke_config(), overrides), str(straight))
  assert events == _events(straight)


def test_summary_numbers_equal_the_members_metrics(vmapped, tmp_path):
  rows = summarize.summarize(vmapped)
  assert len(rows) == 5
  with open(vmapped / 'summary.csv') as f:
    table = {r['name']: r for r in csv.DictReader(f)}
  for name, row in table.items():
    evals = [e for e in _events(vmapped / name) if e['event'] == 'eval']
    assert float(row['final_test_elbo']) == pytest.approx(evals[-1]['test/elbo'])
    assert float(row['best_test_elbo']) == pytest.approx(max(e['test/elbo'] for e in evals))
    assert float(row['final_test_kl']) == pytest.approx(evals[-1]['test/kl'])
  md = (vmapped / 'summary.md').read_text()
  assert 'Mean +- std over seeds' in md and '| 2 |' in md  # latent 5, beta 2: two seeds
  out, rd = plot_curves.plot(vmapped, tmp_path / 'curves.png')
  assert out.stat().st_size > 20_000 and rd.stat().st_size > 10_000
