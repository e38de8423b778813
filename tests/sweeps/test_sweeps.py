"""Tests of sweeps: expansion, vmapped-vs-alone equivalence, skip and resume, summaries."""

import csv
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vae
from tests.helpers import REPO, final_params, leaves, read_events, run_script, smoke_config
from vae import config_lib
from vae.families import models
from vae.reporting import figures, summaries
from vae.sweeps import plan, record, runner
from vae.training import loop, members, run_record

SPEC = 'configs/default.py:smoke,sweep=tiny'


def test_expansion_helpers():
  members = config_lib.product(**{'model.latent_dim': [2, 5], 'objective.beta': [1.0, 4.0]})
  assert len(members) == 4 and members[1] == {'model.latent_dim': 2, 'objective.beta': 4.0}
  assert config_lib.zip_axes(a=[1, 2], b=[3, 4]) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(config_lib.ConfigError):
    config_lib.zip_axes(a=[1, 2], b=[3])
  assert plan.member_name({'model.latent_dim': 2, 'seed': 1}) == 'latent_dim=2,seed=1'
  c = plan.apply_overrides(smoke_config(), {'objective.beta': 4, 'seed': 3})
  assert c.objective.beta == 4.0 and isinstance(c.objective.beta, float) and c.seed == 3
  with pytest.raises(config_lib.ConfigError, match='not a config field'):
    plan.apply_overrides(smoke_config(), {'objective.nope': 1})
  with pytest.raises(config_lib.ConfigError, match='one vmapped group cannot stack'):
    models.check_vmappable([smoke_config(), smoke_config(**{'train.batch_size': 32})])


def test_member_names_are_one_safe_component_and_members_stay_inside_the_root(tmp_path):
  """An axis value with '/', '..' or a newline cannot name a directory outside the sweep's
  root; the names of existing roots stay as they were; a damaged sweep.json naming a path,
  or a member directory that is a link, is refused with one line."""
  assert (plan.member_name({'model.latent_dim': 2, 'objective.beta': 0.5, 'seed': 0})
          == 'latent_dim=2,beta=0.5,seed=0')
  assert plan.member_name({'model.hidden': (512, 256)}) == 'hidden=(512, 256)'
  assert plan.member_name({'optim.lr': 1e-05}) == 'lr=1e-05'
  escaped = plan.member_name({'data.path': '../../../x'})
  assert escaped == 'path=..%2F..%2F..%2Fx'
  assert plan.member_dir(tmp_path, escaped).parent == tmp_path
  assert plan.member_name({'data.path': 'a\nb%'}) == 'path=a%0Ab%25'
  assert plan.member_name({'a': 'x/y'}) != plan.member_name({'a': 'x%2Fy'})
  long_a, long_b = (plan.member_name({'data.path': 'a' * 500 + end}) for end in 'xy')
  assert len(long_a) <= plan.NAME_MAX_BYTES and long_a != long_b
  for bad in ('..', '.', '', 'a/b', '../x'):
    with pytest.raises(config_lib.ConfigError, match='not one plain directory name'):
      plan.member_dir(tmp_path, bad)
  (tmp_path / 'linked').symlink_to(tmp_path.parent)
  with pytest.raises(config_lib.ConfigError, match='a link or a file'):
    plan.member_dir(tmp_path, 'linked')
  root = tmp_path / 'root'
  root.mkdir()
  (root / 'sweep.json').write_text(json.dumps(
      {'config_overrides': {}, 'members': [{'name': '../evil', 'overrides': {}}]}))
  with pytest.raises(config_lib.ConfigError, match='not one plain directory name'):
    record.members(root)
  with pytest.raises(config_lib.ConfigError, match='not one plain directory name'):
    record.SweepRecord(root, SPEC, [{'seed': 0}])
  assert not (tmp_path / 'evil').exists()


def test_resize_latent_pads_mean_and_logvar_halves():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  head = {'gaussian_head': {'kernel': jnp.arange(8.0).reshape(2, 4), 'bias': jnp.arange(4.0)}}
  target = {'gaussian_head': {'kernel': jnp.zeros((2, 6)), 'bias': jnp.zeros(6)}}
  out = members.resize_latent(head, target)
  np.testing.assert_array_equal(out['gaussian_head']['bias'], [0, 1, 0, 2, 3, 0])
  back = members.resize_latent(out, head)
  np.testing.assert_array_equal(back['gaussian_head']['kernel'], head['gaussian_head']['kernel'])


@pytest.fixture(scope='module')
def vmapped(tmp_path_factory):
  root = tmp_path_factory.mktemp('sweep')
  record = runner.run_sweep(SPEC, root, mode='vmap')
  assert all(m['status'] == 'finished' for m in record.data['members'])
  return root


def test_tensorboard_reads_one_run_per_member_with_its_swept_settings(vmapped):
  """Through TensorBoard's own reader (the `tensorboard` extra): one run per member, its
  HParams in the run's own events: the fields the sweep varies, and only those (the view's
  columns are latent size, beta and seed, not ~80 constant fields); metrics that are the
  run's scalar tags."""
  pytest.importorskip('tensorboard')
  from tensorboard.backend.event_processing import event_multiplexer  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  members = [m['name'] for m in json.loads((vmapped / 'sweep.json').read_text())['members']]
  mux = event_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(str(vmapped))
  mux.Reload()
  assert sorted(mux.Runs()) == sorted(f'{m}/tensorboard' for m in members)
  hparams = mux.PluginRunToTagToContent('hparams')
  for member in members:
    run = f'{member}/tensorboard'
    config = json.loads((vmapped / member / 'config.json').read_text())
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams[run]['_hparams_/session_start_info']).session_start_info.hparams
    assert set(start) == {'model.latent_dim', 'objective.beta', 'seed'}
    assert start['model.latent_dim'].number_value == config['model']['latent_dim']
    assert start['objective.beta'].number_value == config['objective']['beta']
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        hparams[run]['_hparams_/experiment']).experiment
    tags = {m.name.tag for m in experiment.metric_infos}
    assert 'test/elbo' in tags and tags <= set(mux.GetAccumulator(run).Tags()['scalars'])
    elbo = mux.Scalars(run, 'test/elbo')[-1].value
    assert elbo == pytest.approx(read_events(vmapped / member)[-1]['test/elbo'], abs=1e-4)


@pytest.mark.parametrize('name,overrides', [
    ('latent_dim=3,beta=2.0', {'model.latent_dim': 3, 'objective.beta': 2.0}),  # padded 3 -> 5
    ('latent_dim=5,beta=2.0,seed=1', {'model.latent_dim': 5, 'objective.beta': 2.0,
                                      'seed': 1}),
])
def test_vmapped_member_matches_member_trained_alone(vmapped, tmp_path, name, overrides):
  alone = tmp_path / 'alone'
  loop.train_and_evaluate(plan.apply_overrides(smoke_config(), overrides), str(alone))
  ev_v, ev_a = read_events(vmapped / name), read_events(alone)
  assert [(e['event'], e['step']) for e in ev_v] == [(e['event'], e['step']) for e in ev_a]
  for a, b in zip(ev_v, ev_a):
    for key, value in b.items():
      if key.startswith(('train/', 'val/', 'test/')):
        assert a[key] == pytest.approx(value, rel=2e-4, abs=2e-4), (key, a[key], value)
  # The same files: images and checkpoints at the same steps, the same best checkpoint.
  for sub_dir in ('images', 'checkpoints'):
    assert sorted(p.name for p in (vmapped / name / sub_dir).iterdir()) == sorted(
        p.name for p in (alone / sub_dir).iterdir()), sub_dir
  run_files = lambda d: sorted(p.name for p in d.iterdir() if p.is_file()
                               and p.name != record.STATUS_FILE)  # the sweep's, not the run's
  assert run_files(vmapped / name) == run_files(alone)
  best_step = max((e['val/elbo'], e['step']) for e in ev_v if 'val/elbo' in e)[1]
  assert vae.load(vmapped / name, 'best').step == vae.load(alone, 'best').step == best_step
  pv, pa = vae.load(vmapped / name, 'latest'), vae.load(alone, 'latest')
  assert pv.latent_dim == overrides['model.latent_dim']  # exported unpadded
  for x, y in zip(_leaves(pv.params), _leaves(pa.params)):
    np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-4)


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(v) for v in jax.tree.leaves(tree)]


def test_members_spread_over_a_model_mesh_axis_match(vmapped, tmp_path):
  """4 members on 8 fake devices: a ('model': 4, 'data': 2) mesh, same results."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             VAE_LOG_BATCH_SHARDING='1')
  out = subprocess.run([sys.executable, str(REPO / 'scripts' / 'sweep.py'), '--config',
                        'configs/default.py:smoke,sweep=tiny4', '--workdir', str(tmp_path),
                        '--mode', 'vmap'], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((tmp_path / '_vmap_group_0' / 'mesh.json').read_text()) == {
      'model': 4, 'data': 2}
  # Inside the compiled step each member's batch is split over 'data', members over 'model'.
  shown = [line for line in out.stderr.splitlines() if 'batch sharding inside the train step' in line]
  assert shown and all("'model', 'data'" in line for line in shown), out.stderr[-3000:]
  for name in ('latent_dim=3,beta=0.5', 'latent_dim=5,beta=2.0'):
    for a, b in zip(read_events(tmp_path / name), read_events(vmapped / name)):
      assert (a['event'], a['step']) == (b['event'], b['step'])
      for key, value in b.items():
        if key.startswith(('train/', 'test/')):
          assert a[key] == pytest.approx(value, rel=1e-3, abs=1e-3), (name, key)


def test_finished_members_are_skipped(vmapped, capsys):
  before = {d.name: (d / 'metrics.jsonl').read_text() for d in vmapped.iterdir()
            if (d / 'metrics.jsonl').exists()}
  runner.run_sweep(SPEC, vmapped, mode='sequential', dry_run=True)
  assert '0 to run' in capsys.readouterr().out
  runner.run_sweep(SPEC, vmapped, mode='sequential')
  after = {d.name: (d / 'metrics.jsonl').read_text() for d in vmapped.iterdir()
           if (d / 'metrics.jsonl').exists()}
  assert before == after


def test_interrupted_member_resumes(tmp_path):
  root = tmp_path / 'root'
  name = 'latent_dim=3,beta=0.5'
  overrides = {'model.latent_dim': 3, 'objective.beta': 0.5}
  # An interrupted member: trained to step 12 of 24 (a checkpoint, no done.json).
  first = plan.apply_overrides(smoke_config(**{'train.num_epochs': 1.0}), overrides)
  loop.train_and_evaluate(first, str(root / name))
  (root / name / 'done.json').unlink()
  (root / name / 'config.json').write_text(json.dumps(config_lib.config_json(
      plan.apply_overrides(smoke_config(), overrides))))
  for other in ('latent_dim=3,beta=2.0', 'latent_dim=5,beta=0.5', 'latent_dim=5,beta=2.0',
                'latent_dim=5,beta=2.0,seed=1'):  # finished members are skipped
    (root / other).mkdir()
    (root / other / 'done.json').write_text(json.dumps({'num_epochs': 2.0}))
  record = runner.run_sweep(SPEC, root, mode='sequential')
  assert all(m['status'] == 'finished' for m in record.data['members'])
  assert not (root / 'latent_dim=5,beta=0.5' / 'metrics.jsonl').exists()
  events = read_events(root / name)
  assert [e['step'] for e in events if e['event'] == 'eval'] == [12, 24]
  straight = tmp_path / 'straight'
  loop.train_and_evaluate(plan.apply_overrides(smoke_config(), overrides), str(straight))
  assert events == read_events(straight)


def test_summary_numbers_equal_the_members_metrics(vmapped, tmp_path, caplog):
  rows = summaries.summarize(vmapped)
  assert len(rows) == 5
  with open(vmapped / 'summary.csv') as f:
    table = {r['name']: r for r in csv.DictReader(f)}
  for name, row in table.items():
    evals = [e for e in read_events(vmapped / name) if e['event'] == 'eval']
    assert float(row['final_test_elbo']) == pytest.approx(evals[-1]['test/elbo'])
    best = max(evals, key=lambda e: e['val/elbo'])  # chosen by validation, reported on test
    assert int(row['best_val_step']) == best['step'] == vae.load(vmapped / name, 'best').step
    assert float(row['test_elbo']) == pytest.approx(best['test/elbo'])
    assert float(row['test_kl']) == pytest.approx(best['test/kl'])
    # What a figure was computed on, and each member's share of its group's time.
    assert int(row['test_images']) == best['test/count'] == 256
    assert row['trained_with'] == 'a vmap group of 5 (time shared)'
    assert float(row['wall_time_s']) == pytest.approx(
        run_record.training_seconds(vmapped / name) / 5)
  md = (vmapped / 'summary.md').read_text()
  assert 'over test_images test images' in md and 'iw_images' in md
  assert 'Mean +- std over seeds' in md and '| 2 |' in md  # latent 5, beta 2: two seeds
  assert '(n = 2)' in md and '(n = 1)' in md and '+- 0.000' not in md
  caplog.set_level('WARNING', logger='vae')
  out, rd, styles = figures.sweep_curves(vmapped, tmp_path / 'curves.png')
  evals_per_member = len([e for e in read_events(vmapped / name) if e['event'] == 'eval'])
  assert (evals_per_member < 3) == any('fewer than 3 evaluations' in r.message
                                       for r in caplog.records)
  # One colour per latent size, one line style per beta: every setting is told apart.
  assert len(styles) == 4 and len(set(styles.values())) == 4
  by_latent = {}
  for label, (colour, dash, _) in styles.items():
    by_latent.setdefault(label.split(',')[0], set()).add(colour)
  assert all(len(c) == 1 for c in by_latent.values()) and len(
      {next(iter(c)) for c in by_latent.values()}) == 2
  assert len({(label.split(',')[1], style[1]) for label, style in styles.items()}) == 2
  assert out.stat().st_size > 20_000 and rd.stat().st_size > 10_000
  # Train curves as one mean per epoch (no zigzag at epoch boundaries).
  events = read_events(vmapped / name)
  train = figures._series(events, 'train/elbo')  # pylint: disable=protected-access
  epochs = sorted({math.ceil(e['epoch'] - 1e-9) for e in events if e['event'] == 'train'})
  assert len(train) == len(epochs) and np.all(np.diff(train[:, 0]) > 0)
  first = [e['train/elbo'] for e in events if e['event'] == 'train' and e['epoch'] <= 1.0]
  assert train[0, 1] == pytest.approx(np.mean(first))
  # The final test ELBO against each swept value, mean +- sd over seeds.
  paths = figures.metric_against_values(vmapped, tmp_path / 'curves.png')
  assert [p.name for p in paths] == ['curves_test_elbo_vs_latent_dim.png',
                                     'curves_test_elbo_vs_beta.png']
  assert all(p.stat().st_size > 10_000 for p in paths)


def test_a_moved_sweep_root_keeps_its_members(vmapped, tmp_path):
  # As after copying a sweep from a cluster: sweep.json still names the old directories.
  moved = tmp_path / 'copied_sweep'
  shutil.copytree(vmapped, moved, ignore=shutil.ignore_patterns('checkpoints', 'tensorboard'))
  assert str(vmapped) in (moved / 'sweep.json').read_text()
  found = record.members(moved)
  assert len(found) == 5 and all(w.parent == moved and w.is_dir() for _, _, w in found)
  _, _, styles = figures.sweep_curves(moved, tmp_path / 'curves.png')
  assert len(styles) == 4  # every setting's curves were read from the copy
  rows, missing = summaries.sweep_rows(moved)
  assert sum(len(dirs) for _, dirs in rows) + len(missing) == 5
  assert all(pathlib.Path(d).parent == moved for _, dirs in rows for d in dirs)


def test_curve_limits_leave_out_the_first_percent_of_training():
  xs = np.array([1e2, 1e3, 1e4, 1e5, 1e6])
  early = (xs, np.array([-900.0, -400, -260, -250, -240]), np.array([-850.0, -380, -255, -245,
                                                                     -238]))
  mean_line = np.array([-700.0, -300, -262, -252, -244])
  other = (xs, mean_line, mean_line)
  low, high = figures.focus_ylim([early, other])
  # From x >= 1e4 (1 % of 1e6) on: values span [-262, -238], padded by 5 % of 24 nats.
  assert low == pytest.approx(-262 - 1.2) and high == pytest.approx(-238 + 1.2)
  assert figures.focus_ylim([]) is None


def test_sweep_resumes_after_its_first_group_and_an_interrupted_member(tmp_path):
  """Two vmap groups; SIGINT while the second trains; the rerun finishes every member."""
  spec = 'configs/default.py:smoke,sweep=tiny_groups'
  cmd = [sys.executable, str(REPO / 'scripts' / 'sweep.py'), '--config', spec, '--workdir',
         str(tmp_path), '--mode', 'vmap']
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  deadline = time.time() + 300
  marker = tmp_path / '_vmap_group_1' / 'members.json'
  while not marker.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0 and 'Traceback' not in out, out[-3000:]
  status = {m['name']: m for m in json.loads((tmp_path / 'sweep.json').read_text())['members']}
  groups = {g: sorted(n for n, m in status.items() if m['group'] == g) for g in (0, 1)}
  assert groups[0] == ['activation=relu,beta=0.5,num_epochs=6.0',
                       'activation=relu,beta=2.0,num_epochs=6.0']
  assert all(status[n]['status'] == 'finished' for n in groups[0])
  assert all(status[n]['status'] == 'interrupted' for n in groups[1])
  done_before = {n: (tmp_path / n / 'metrics.jsonl').read_text() for n in groups[0]}
  rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  status = json.loads((tmp_path / 'sweep.json').read_text())['members']
  assert [m['status'] for m in status] == ['finished'] * 4
  for n in groups[0]:  # the finished group was not touched
    assert (tmp_path / n / 'metrics.jsonl').read_text() == done_before[n]
  for n in groups[1]:
    steps = [e['step'] for e in read_events(tmp_path / n) if e['event'] == 'eval']
    assert steps == [12, 24, 36, 48, 60, 72]
    assert vae.load(tmp_path / n, 'latest').step == 72


def test_members_stop_early_independently(tmp_path):
  """A member whose learning rate is ~0 plateaus at once and stops; the other trains on.
  Each matches the same member trained alone (same stop step, same files)."""
  base = {'train.num_epochs': 4.0, 'train.eval_every_epochs': 0.5,
          'train.checkpoint_every_epochs': 1.0, 'train.early_stopping_epochs': 1.0}
  configs = [plan.apply_overrides(smoke_config(**base), {'optim.lr': lr})
             for lr in (1e-3, 1e-30)]
  work = [tmp_path / 'fast', tmp_path / 'still']
  results = loop.train_members(configs, work, tmp_path / 'group')
  assert [r['status'] for r in results] == ['finished', 'early_stopped']
  assert results[0]['step'] == 48 and results[1]['step'] == 18
  assert json.loads((work[1] / 'done.json').read_text())['status'] == 'early_stopped'
  assert max(e['step'] for e in read_events(work[1])) == 18
  assert vae.load(work[1], 'latest').step == 18
  assert max(e['step'] for e in read_events(work[0])) == 48
  alone = tmp_path / 'alone'
  single = loop.train_and_evaluate(configs[1], str(alone))
  assert single['status'] == 'early_stopped' and single['step'] == 18
  assert [(e['event'], e['step']) for e in read_events(alone)] == [
      (e['event'], e['step']) for e in read_events(work[1])]
  assert sorted(p.name for p in (alone / 'checkpoints').iterdir()) == sorted(
      p.name for p in (work[1] / 'checkpoints').iterdir())
  # Rerunning the group changes nothing: both runs have ended.
  before = [(w / 'metrics.jsonl').read_text() for w in work]
  again = loop.train_members(configs, work, tmp_path / 'group')
  assert [r['status'] for r in again] == ['finished', 'early_stopped']
  assert [(w / 'metrics.jsonl').read_text() for w in work] == before


def test_axis_cuts_a_preset_and_config_overrides_are_recorded(tmp_path):
  rc, out, err = run_script('sweep', '--config', 'configs/default.py', '--workdir', tmp_path,
                            '--dry_run', '--axis', 'model.latent_dim=2', '--axis',
                            'objective.beta=1,4', '--axis', 'seed=0')
  assert rc == 0, err
  assert out.strip().splitlines()[-1] == '2 members, 2 to run, mode sequential'
  assert 'latent_dim=2,beta=1.0,seed=0' in out and 'latent_dim=2,beta=4.0,seed=0' in out
  for axis, text in (('model.nosuch=1', "'model.nosuch' is not a config field"),
                     ('objective.beta=abc', "objective.beta='abc' is not a float")):
    rc, _, err = run_script('sweep', '--config', 'configs/default.py', '--workdir', tmp_path,
                            '--dry_run', '--axis', axis)
    assert rc == 2 and err.count('\n') == 1 and text in err, err
  # --config.* overrides every member; recorded; a rerun with other overrides is refused.
  spec = 'configs/default.py:smoke,sweep=tiny4'
  rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 's', '--axis',
                          'model.latent_dim=3', '--axis', 'objective.beta=0.5',
                          '--config.train.num_epochs=1')
  assert rc == 0, err
  record = json.loads((tmp_path / 's' / 'sweep.json').read_text())
  assert record['config_overrides'] == {'train.num_epochs': 1.0}
  assert [m['name'] for m in record['members']] == ['latent_dim=3,beta=0.5']
  assert vae.load(tmp_path / 's' / 'latent_dim=3,beta=0.5').step == 12
  rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 's', '--axis',
                          'model.latent_dim=3', '--axis', 'objective.beta=0.5',
                          '--config.train.num_epochs=2')
  assert rc == 2 and 'was run with --config overrides' in err
  rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 't',
                          '--config.objective.beta=1.0')
  assert rc == 2 and 'is an axis of this sweep' in err


def test_evaluate_a_whole_sweep_resumably_into_the_summary(vmapped):
  from vae.evaluation import report  # pylint: disable=g-import-not-at-top
  compiled = report.batch_terms._cache_size()  # pylint: disable=protected-access
  rc, out, err = run_script('evaluate', '--sweep', vmapped, '--num_samples', '5',
                            '--max_examples', '64')
  assert rc == 0, err
  assert '5 members evaluated' in out
  # Compiled once per distinct model shape (latent sizes 3 and 5), not once per member.
  assert report.batch_terms._cache_size() - compiled <= 2  # pylint: disable=protected-access
  stamps = {d.name: (d / 'eval.json').stat().st_mtime_ns for d in vmapped.iterdir()
            if (d / 'eval.json').exists()}
  assert len(stamps) == 5
  rc, _, err = run_script('evaluate', '--sweep', vmapped, '--num_samples', '5',
                          '--max_examples', '64')
  assert rc == 0, err
  assert {d: (vmapped / d / 'eval.json').stat().st_mtime_ns for d in stamps} == stamps
  rows = {r['name']: r for r in summaries.summarize(vmapped)}
  for name, row in rows.items():
    result = json.loads((vmapped / name / 'eval.json').read_text())
    assert row['test_log_likelihood'] == result['log_likelihood'] and row['iw_samples'] == 5
  # One paired table of the whole sweep: a row per setting, its seeds grouped.
  rc, text, err = run_script('compare_runs', '--sweep', vmapped, '--reference',
                             'latent_dim=5,beta=2.0')
  assert rc == 0, err
  lines = [line for line in text.splitlines() if line.startswith('| latent_dim=')]
  assert len(lines) == 4 and '| 0,1 |' in next(l for l in lines if 'latent_dim=5,beta=2.0 |' in l)
  pair = [json.loads((vmapped / n / 'eval.json').read_text())['log_likelihood']
          for n in ('latent_dim=5,beta=2.0', 'latent_dim=5,beta=2.0,seed=1')]
  assert f'| {np.mean(pair):.2f} |' in text
  # One code path for both tables: a member's ELBO, KL and minutes agree (eval.json's ELBO
  # on the images of its log p(x); a vmap member's share of its group's time).
  _, table = summaries.compare_rows([(n, [vmapped / n]) for n in rows])
  for r in table:
    row = rows[r['name']]
    assert row['elbo_from'] == 'eval.json' and row['test_images'] == 64
    assert (r['elbo'], r['kl']) == (row['test_elbo'], row['test_kl'])
    assert r['minutes'] == pytest.approx(row['wall_time_s'] / 60)
    assert row['trained_with'].startswith('a vmap group of')
  assert 'test_recon' in (vmapped / 'summary.md').read_text().split('Mean +- std')[1]
  rc, _, err = run_script('compare_runs', '--sweep', vmapped / 'nope')
  assert rc == 2 and 'no such directory' in err


def _sweep_cmd(root, *extra, spec='configs/default.py:smoke,sweep=tiny4'):
  return [sys.executable, str(REPO / 'scripts' / 'sweep.py'), '--config', spec, '--workdir',
          str(root), *extra]


def _eval_steps(workdir):
  return [e['step'] for e in read_events(workdir) if e['event'] == 'eval']


def test_two_concurrent_tasks_run_every_member_once_and_a_killed_task_resumes(tmp_path):
  root = tmp_path / 'tasks'
  procs = [subprocess.Popen(_sweep_cmd(root, '--task_index', str(i), '--num_tasks', '2'),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in (0, 1)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  names = ['latent_dim=3,beta=0.5', 'latent_dim=3,beta=2.0', 'latent_dim=5,beta=0.5',
           'latent_dim=5,beta=2.0']
  assert record.statuses(root) == {n: 'finished' for n in names}
  assert [m['status'] for m in json.loads((root / 'sweep.json').read_text())['members']] == [
      'finished'] * 4
  for n in names:  # each trained exactly once: one event per step, one session
    assert _eval_steps(root / n) == [12, 24]
    assert len(json.loads((root / n / 'run.json').read_text())['sessions']) == 1
  # Task 0 of a new sweep killed -9 mid-member; its rerun resumes, task 1 is untouched.
  root2 = tmp_path / 'killed'
  proc = subprocess.Popen(_sweep_cmd(root2, '--task_index', '0', '--num_tasks', '2'), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = root2 / names[0] / 'checkpoints' / '12'
  deadline = time.time() + 300
  while not first.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert record.statuses(root2)[names[0]] == 'running'
  rerun = subprocess.run(_sweep_cmd(root2, '--task_index', '0', '--num_tasks', '2'), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  status = record.statuses(root2)
  assert status[names[0]] == status[names[2]] == 'finished'
  assert status[names[1]] == status[names[3]] == 'pending'  # task 1's, never started
  assert _eval_steps(root2 / names[0]) == [12, 24]


def test_generated_slurm_array_completes_the_sweep_task_by_task(tmp_path):
  root = tmp_path / 'slurm'
  out = subprocess.run(_sweep_cmd(root, '--mode', 'slurm', '--unit', 'group', '--axis',
                                  'objective.beta=0.5', '--partition', 'gpu'),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  script = root / 'sweep.sbatch'
  assert f'sbatch {script}' in out.stdout
  text = script.read_text()
  for line in ('#SBATCH --array=0-0', '#SBATCH --signal=B:TERM@120', '#SBATCH --requeue',
               '#SBATCH --partition=gpu', '#SBATCH --gpus-per-task=1'):
    assert line in text
  assert "--axis objective.beta=0.5" in text and '--mode vmap' in text
  env = dict(os.environ, SLURM_ARRAY_TASK_ID='7', SLURM_ARRAY_TASK_MIN='7',
             SLURM_ARRAY_TASK_COUNT='1')
  # GPUs asked for, and this jax has none: the job fails at once with one line.
  no_gpu = subprocess.run(['bash', str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
  assert no_gpu.returncode == 2 and 'has no accelerator' in no_gpu.stderr, no_gpu.stderr
  assert not (root / 'latent_dim=3,beta=0.5').exists()
  out = subprocess.run(_sweep_cmd(root, '--mode', 'slurm', '--unit', 'group', '--axis',
                                  'objective.beta=0.5', '--gpus_per_task', '0'),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and 'has no accelerator' not in script.read_text(), out.stderr
  run = subprocess.run(['bash', str(script)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert record.statuses(root) == {'latent_dim=3,beta=0.5': 'finished',
                                   'latent_dim=5,beta=0.5': 'finished'}
  before = (root / 'latent_dim=3,beta=0.5' / 'metrics.jsonl').read_text()
  again = subprocess.run(['bash', str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)  # resubmitted: finished members are skipped
  assert again.returncode == 0, again.stderr[-2000:]
  assert (root / 'latent_dim=3,beta=0.5' / 'metrics.jsonl').read_text() == before


def test_a_family_vmaps_over_beta_and_seed_and_matches_each_member_alone(tmp_path):
  """Two-layer VampPrior + IAF members differing in beta and seed share one program (the
  family fields are not vmappable across latent sizes, but beta, seed, warm-up and the
  learning rate are): the second member's events equal its run alone."""
  family = {'model.stochastic_layers': 2, 'model.prior': 'vamp', 'model.prior_components': 8,
            'model.posterior': 'iaf', 'model.flow_hidden': (32,), 'train.num_epochs': 1.0}
  configs = [smoke_config(**family), smoke_config(**family, **{'objective.beta': 2.0,
                                                               'seed': 1})]
  assert len(plan.vmap_groups(configs)) == 1
  dirs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  loop.train_members(configs, dirs, str(tmp_path / 'group'))
  loop.train_and_evaluate(configs[1], str(tmp_path / 'alone'))
  ev_v, ev_a = read_events(tmp_path / 'b'), read_events(tmp_path / 'alone')
  assert [(e['event'], e['step']) for e in ev_v] == [(e['event'], e['step']) for e in ev_a]
  for a, b in zip(ev_v, ev_a):
    for key, value in b.items():
      if key.startswith(('train/', 'val/', 'test/')):
        assert a[key] == pytest.approx(value, rel=2e-4, abs=2e-4), (key, a[key], value)
  assert 'val/kl_z2' in ev_v[-1]


@pytest.mark.parametrize('point', ['VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES',
                                   'VAE_INJECT_KILL_DURING_SAVE'])
def test_a_group_killed_between_two_members_saves_resumes_to_the_same_end(vmapped, tmp_path,
                                                                          point):
  """SIGKILL after the first member saved step 12 and before the second did (or 20 ms into
  the background save of step 12): the rerun resumes the group from its newest common step
  (0: a fresh start here), moves a lone committed step aside, trains again and ends with
  every member identical to the uninterrupted sweep."""
  root = tmp_path / 'killed'
  env = dict(os.environ, **{point: '12'})
  first = subprocess.run(_sweep_cmd(root, '--mode', 'vmap', spec=SPEC), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert first.returncode != 0
  rerun = subprocess.run(_sweep_cmd(root, '--mode', 'vmap', spec=SPEC), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  names = sorted(p.name for p in vmapped.iterdir() if (p / 'done.json').exists())
  assert names and sorted(record.statuses(root)) == names
  moved = [p for n in names for p in (root / n / 'checkpoints').iterdir()
           if '.uncommitted-' in p.name]
  if point == 'VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES':
    assert len(moved) == 1 and moved[0].name.startswith('12.')
  else:
    assert all(p.name.startswith('12.') for p in moved)
  for n in names:
    ref, got = final_params(vmapped / n), final_params(root / n)
    assert ref[0] == got[0]
    for k, v in leaves(ref[1]).items():
      np.testing.assert_array_equal(leaves(got[1])[k], v)


def _tree_hashes(root):
  import hashlib  # pylint: disable=g-import-not-at-top
  return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                     if p.is_file() else 'dir')
          for p in sorted(root.rglob('*'))}


def test_a_refused_vmap_rerun_changes_nothing(vmapped, tmp_path):
  """A rerun whose cut makes a vmap group of other members than the one saved is refused
  with exit 2 before anything is written: sweep.json, statuses, member directories and
  locks stay as they were (no phantom member, no reordering)."""
  root = tmp_path / 'sweep'
  shutil.copytree(vmapped, root)
  (root / 'latent_dim=3,beta=2.0' / 'done.json').unlink()  # one member to train again
  before = _tree_hashes(root)
  code, _, err = run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'vmap',
                            '--axis', 'objective.beta=2.0')
  assert code == 2, err
  assert 'holds a group of 5 members, not 3' in err and 'Traceback' not in err
  assert _tree_hashes(root) == before


def test_a_sequential_sweep_runs_the_other_members_after_one_fails(tmp_path):
  """A member that fails (here: its metrics file cannot be written, a directory stands
  there) is recorded as failed and named; the members after it still train; the sweep exits
  1. (A member directory holding a run of another config is refused before anything runs:
  test_a_member_trained_from_another_config_is_refused_and_the_content_recorded.)"""
  root = tmp_path / 'seq'
  broken = root / 'latent_dim=3,beta=0.5'
  (broken / 'metrics.jsonl').mkdir(parents=True)
  code, out, err = run_script('sweep', '--config', 'configs/default.py:smoke,sweep=tiny4',
                              '--workdir', root, '--mode', 'sequential',
                              '--axis', 'model.latent_dim=3')
  assert code == 1, err
  # The end prints one line per member: its status and its test ELBO.
  assert re.search(r'latent_dim=3,beta=2\.0\s+finished\s+test ELBO -\d+\.\d{3}', out), out
  assert re.search(r'latent_dim=3,beta=0\.5\s+failed\s+no test ELBO yet', out), out
  statuses = {m['name']: m['status']
              for m in json.loads((root / 'sweep.json').read_text())['members']}
  assert statuses == {'latent_dim=3,beta=0.5': 'failed', 'latent_dim=3,beta=2.0': 'finished'}
  assert (root / 'latent_dim=3,beta=2.0' / 'done.json').exists()


def test_sigterm_to_a_processes_sweep_reaches_its_members_and_leaves_no_orphan(tmp_path):
  """SIGTERM to `sweep.py --mode processes` is passed on to the running train.py members:
  each saves and exits, the sweep waits for them, records them as interrupted and exits 0;
  no member process outlives it."""
  cmd = _sweep_cmd(tmp_path, '--mode', 'processes', '--parallel', '2', '--axis',
                   'model.latent_dim=3', '--config.train.num_epochs=60')
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  names = ['latent_dim=3,beta=0.5', 'latent_dim=3,beta=2.0']
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not all(
      (tmp_path / n / 'checkpoints').is_dir() and any(
          p.name.isdigit() for p in (tmp_path / n / 'checkpoints').iterdir()) for n in names):
    time.sleep(0.1)  # both members train and have saved once
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0 and 'Traceback' not in out, out[-3000:]
  left = subprocess.run(['pgrep', '-f', str(tmp_path)], capture_output=True, text=True).stdout
  assert not left.strip(), left
  status = {m['name']: m['status'] for m in json.loads((tmp_path / 'sweep.json').read_text())[
      'members']}
  assert status == {n: 'interrupted' for n in names}
  for n in names:
    assert 'SIGTERM' in (tmp_path / f'{n}.log').read_text()


def test_a_diverging_member_of_a_vmap_group_stops_alone(tmp_path, monkeypatch):
  """One member of a vmapped group goes NaN (lr 1e12): it is named, frozen at its last good
  checkpoint and recorded as diverged; the other trains to the end exactly as it would
  have (the group goes back to the common checkpoint with the diverged member frozen, in
  the same program: the data is read once and the group built once); a rerun does not
  train the diverged member again."""
  configs = [smoke_config(**{'optim.lr': lr}) for lr in (1e-3, 1e12)]
  dirs = [tmp_path / 'good', tmp_path / 'bad']
  calls = {'load': 0, 'group': 0}
  load, group = loop.data_lib.load, loop.members_lib.Group

  def counted(name, fn):
    def wrapper(*args, **kwargs):
      calls[name] += 1
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(loop.data_lib, 'load', counted('load', load))
  monkeypatch.setattr(loop.members_lib, 'Group', counted('group', group))
  results = loop.train_members(configs, dirs, tmp_path / 'group')
  assert calls == {'load': 1, 'group': 1}
  assert [r['status'] for r in results] == ['finished', 'diverged']
  done = json.loads((dirs[1] / 'done.json').read_text())
  assert done['status'] == 'diverged' and done['step'] < 24
  assert np.isfinite(results[0]['test/elbo'])
  # The good member equals the same group run with a tame second member.
  alone = loop.train_members([configs[0], smoke_config(**{'optim.lr': 2e-3})],
                             [tmp_path / 'good2', tmp_path / 'tame'], tmp_path / 'group2')
  assert alone[0]['test/elbo'] == results[0]['test/elbo']
  got, want = leaves(final_params(dirs[0])[1]), leaves(final_params(tmp_path / 'good2')[1])
  assert got.keys() == want.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  again = loop.train_members(configs, dirs, tmp_path / 'group')
  assert [r['status'] for r in again] == ['finished', 'diverged']
  assert runner._result_status('diverged') == 'failed'


@pytest.mark.parametrize('text', ['{"members": ', '[]', '{"members": [{"overrides": {}}]}',
                                  '{"members": {"a": 1}}', ''],
                         ids=['torn', 'a list', 'a member without name', 'members not a list',
                              'empty'])
@pytest.mark.parametrize('script', ['sweep', 'evaluate', 'summarize'])
def test_a_damaged_sweep_json_is_one_line(tmp_path, text, script):
  root = tmp_path / 'root'
  root.mkdir()
  (root / 'sweep.json').write_text(text)
  argv = {'sweep': ['--config', SPEC, '--workdir', root, '--mode', 'vmap'],
          'evaluate': ['--sweep', root, '--num_samples', '5'],
          'summarize': [root]}[script]
  code, _, err = run_script(script, *argv)
  assert code == 2, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and 'sweep.json is damaged' in lines[0] and 'Traceback' not in err
  assert (root / 'sweep.json').read_text() == text


def test_slurm_script_warns_of_a_one_task_array_and_refuses_line_breaks(tmp_path):
  root = tmp_path / 'slurm'
  code, _, err = run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'slurm',
                            '--unit', 'group', '--cpus_per_task', '16')
  assert code == 0, err
  assert 'warning: all 5 members form one group: the array has one task' in err
  assert '#SBATCH --cpus-per-task=16' in (root / 'sweep.sbatch').read_text()
  # Account, QoS, GPUs as generic resources, extra directives and setup lines.
  code, _, err = run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'slurm',
                            '--account', 'lab', '--qos', 'high', '--gpu_directive', 'gres',
                            '--gpus_per_task', '2', '--sbatch=--constraint=a100',
                            '--setup', 'module load cuda/12.4')
  assert code == 0, err
  lines = (root / 'sweep.sbatch').read_text().splitlines()
  for line in ('#SBATCH --ntasks=1', '#SBATCH --account=lab', '#SBATCH --qos=high',
               '#SBATCH --gres=gpu:2', '#SBATCH --constraint=a100', 'module load cuda/12.4'):
    assert line in lines, line
  assert not any('--gpus-per-task' in line for line in lines)
  assert lines.index('module load cuda/12.4') < next(
      i for i, line in enumerate(lines) if line.startswith('exec '))
  code, _, err = run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'slurm',
                            '--sbatch=constraint a100')
  assert code == 2 and 'give one directive as --name or --name=value' in err, err
  for flag in ('--partition', '--time', '--setup', '--account'):
    code, _, err = run_script('sweep', '--config', SPEC, '--workdir', tmp_path / 'other',
                              '--mode', 'slurm', flag, 'gpu\nrm -rf ~')
    assert code == 2 and f'{flag} ' in err and 'line break' in err, err
    assert not (tmp_path / 'other' / 'sweep.sbatch').exists()
  code, _, err = run_script('sweep', '--config', SPEC, '--workdir', f'{tmp_path}/x\ny',
                            '--mode', 'slurm')
  assert code == 2 and 'line break' in err, err


def test_a_finished_vmap_sweep_grows_by_new_groups(tmp_path):
  """A vmap sweep run on a cut (latent size 3: two members, group 0), then on the whole
  preset: exactly the three new members train, in a new group (1); the old members' files
  stay byte-identical; every member ends finished."""
  root = tmp_path / 'grow'
  assert run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'vmap', '--axis',
                    'model.latent_dim=3')[0] == 0
  old = ['latent_dim=3,beta=0.5', 'latent_dim=3,beta=2.0']
  before = {n: _tree_hashes(root / n) for n in old}
  group0 = _tree_hashes(root / '_vmap_group_0')
  code, out, err = run_script('sweep', '--config', SPEC, '--workdir', root, '--mode', 'vmap')
  assert code == 0, err
  assert {n: _tree_hashes(root / n) for n in old} == before
  assert _tree_hashes(root / '_vmap_group_0') == group0
  members = json.loads((root / '_vmap_group_1' / 'members.json').read_text())
  assert len(members) == 3
  assert record.statuses(root) == dict.fromkeys(
      old + ['latent_dim=5,beta=0.5', 'latent_dim=5,beta=2.0', 'latent_dim=5,beta=2.0,seed=1'],
      'finished')
  assert {n: record.read_status(root / n)['group'] for n in record.statuses(root)} == {
      **dict.fromkeys(old, 0), **dict.fromkeys(['latent_dim=5,beta=0.5', 'latent_dim=5,beta=2.0',
                                                'latent_dim=5,beta=2.0,seed=1'], 1)}


def test_a_second_start_of_the_same_task_is_refused_before_it_writes(tmp_path):
  """Two processes of one task leapfrogged member by member, each recording the other's
  member as failed. The task's lock refuses the second (exit 2, nothing written); the
  kernel releases it when its holder dies, so a requeued task runs."""
  root = tmp_path / 'sweep'
  root.mkdir()
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, os, sys, time\n'
       'f = open(sys.argv[1], "a+"); fcntl.flock(f, fcntl.LOCK_EX)\n'
       'f.write(str(os.getpid())); f.flush(); print("held", flush=True); time.sleep(600)',
       str(root / '.task-0-of-1.lock')], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = _tree_hashes(root)
    args = ('--config', SPEC, '--workdir', root, '--axis', 'model.latent_dim=3', '--axis',
            'objective.beta=2.0', '--axis', 'seed=0')
    code, _, err = run_script('sweep', *args)
    assert code == 2, err
    assert f'task 0 of 1 of sweep {root} is already running (pid {holder.pid})' in err
    assert err.count('\n') == 1 and _tree_hashes(root) == before
  finally:
    holder.kill()  # SIGKILL: no cleanup, the kernel drops the lock
    holder.wait()
  code, _, err = run_script('sweep', *args)
  assert code == 0, err
  assert json.loads((root / 'sweep.json').read_text())['members']


def test_members_are_listed_in_natural_order_under_their_own_names(tmp_path):
  """A sweep grown by a value (latent 32 added after 2 and 8) lists 2, 8, 32, numbers by
  value (1e-3 < 0.5 < 4), whatever order sweep.json holds them in; folders keep their names."""
  grown = [{'model.latent_dim': d, 'objective.beta': b}
           for d, b in ((8, 0.5), (32, 0.5), (2, 4.0), (2, 0.5), (2, 1e-3))]
  (tmp_path / 'sweep.json').write_text(json.dumps(
      {'config': 'x', 'members': [{'name': plan.member_name(o), 'overrides': o}
                                  for o in grown]}))
  names = [n for n, _, _ in record.members(tmp_path)]
  assert names == ['latent_dim=2,beta=0.001', 'latent_dim=2,beta=0.5', 'latent_dim=2,beta=4.0',
                   'latent_dim=8,beta=0.5', 'latent_dim=32,beta=0.5']
  assert [w.name for _, _, w in record.members(tmp_path)] == names


def test_a_member_trained_from_another_config_is_refused_and_the_content_recorded(tmp_path,
                                                                                 caplog):
  """sweep.json records the base config's content and hash; a member directory holding a
  run of another config (hidden (16,) in a (64, 64) sweep) is refused, naming the field,
  before anything is written; a sweep.json saved with only the path gets one warning and
  the content at its next run."""
  spec = 'configs/default.py:smoke,sweep=tiny4'
  cut = ('--axis', 'model.latent_dim=3', '--axis', 'objective.beta=0.5',
         '--config.train.num_epochs=1')
  odd = plan.apply_overrides(smoke_config(**{'train.num_epochs': 1.0, 'model.hidden': (16,)}),
                             {'model.latent_dim': 3, 'objective.beta': 0.5})
  loop.train_and_evaluate(odd, str(tmp_path / 'odd' / 'latent_dim=3,beta=0.5'))
  rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 'odd', *cut)
  assert rc == 2 and 'model.hidden' in err and err.count('\n') == 1, err
  assert not (tmp_path / 'odd' / 'sweep.json').exists()
  rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 'ok', *cut)
  assert rc == 0, err
  saved = json.loads((tmp_path / 'ok' / 'sweep.json').read_text())
  assert saved['config_content']['model']['hidden'] == [64, 64]
  assert len(saved['config_sha256']) == 64
  old = {k: v for k, v in saved.items() if k not in ('config_content', 'config_sha256')}
  (tmp_path / 'ok' / 'sweep.json').write_text(json.dumps(old))
  with caplog.at_level('WARNING', logger='vae'):
    rc, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / 'ok', *cut)
  assert rc == 0, err
  assert sum('records only the path' in r.getMessage() for r in caplog.records) == 1
  again = json.loads((tmp_path / 'ok' / 'sweep.json').read_text())
  assert again['config_sha256'] == saved['config_sha256']


def _dry(tmp_path, *flags, config='configs/default.py'):
  rc, out, err = run_script('sweep', '--config', config, '--workdir', tmp_path, '--dry_run',
                            *flags)
  return rc, [line.split()[0] for line in out.strip().splitlines()[:-1]], err


def test_grids_from_the_command_line_extend_zip_and_draw(tmp_path):
  """--axis defines values outside the preset (latent sizes 8 and 32 beside its 2); a
  config without get_sweep takes its grid from --axis; --zip pairs the lists; --random N
  --seed S draws N members from ranges, the same ones again for the same seed."""
  rc, names, err = _dry(tmp_path, '--axis', 'model.latent_dim=2,8,32', '--axis',
                        'objective.beta=1', '--axis', 'seed=0')
  assert rc == 0, err
  assert names == ['latent_dim=2,beta=1.0,seed=0', 'latent_dim=8,beta=1.0,seed=0',
                   'latent_dim=32,beta=1.0,seed=0']
  rc, names, err = _dry(tmp_path, '--axis', 'model.latent_dim=2,8', '--axis',
                        'objective.beta=1,4', '--zip', '--axis', 'seed=0')
  assert rc == 0, err
  assert sorted(names) == ['latent_dim=2,beta=1.0,seed=0', 'latent_dim=8,beta=4.0,seed=0']
  vamp = 'configs/fashion_mnist_vamp.py'  # no get_sweep: the grid is the --axis product
  rc, names, err = _dry(tmp_path, '--axis', 'model.latent_dim=8,16', '--axis', 'seed=0,1',
                        config=vamp)
  assert rc == 0 and len(names) == 4, err
  draw = ('--axis', 'optim.lr=log:1e-4:1e-2', '--axis', 'model.latent_dim=choice:2,8,32',
          '--random', '6', '--seed', '3')
  rc, first, err = _dry(tmp_path, *draw, config=vamp)
  assert rc == 0 and len(first) == 6, err
  for name in first:
    fields = dict(item.split('=') for item in name.split(','))
    assert 1e-4 <= float(fields['lr']) <= 1e-2 and fields['latent_dim'] in ('2', '8', '32')
  assert _dry(tmp_path, *draw, config=vamp)[1] == first  # the same seed: the same members
  assert _dry(tmp_path, *draw[:-1], '4', config=vamp)[1] != first
  for flags, text in ((('--axis', 'model.latent_dim=2,8', '--axis', 'objective.beta=1,2,4',
                        '--zip'), '--zip pairs axes of one length'),
                      (('--axis', 'optim.lr=normal:0:1', '--random', '2'),
                       'give log:LOW:HIGH, uniform:LOW:HIGH or choice:'),
                      (('--axis', 'optim.lr=log:0:1', '--random', '2'), 'LOW > 0 for log')):
    rc, _, err = _dry(tmp_path, *flags)
    assert rc == 2 and text in err and err.count('\n') == 1, err


def test_mode_auto_follows_its_rule_and_a_sweep_keeps_its_recorded_mode(vmapped):
  """--mode auto: one after another on a CPU (one model fills the cores), vmap on an
  accelerator with two or more members; recorded in sweep.json; a sweep recorded with a
  mode keeps it when rerun under auto."""
  assert runner.choose_mode('auto', 'cpu', 8) == ('sequential', 'auto: 8 member(s) on cpu')
  assert runner.choose_mode('auto', 'gpu', 8)[0] == 'vmap'
  assert runner.choose_mode('auto', 'tpu', 32)[0] == 'vmap'
  assert runner.choose_mode('auto', 'gpu', 1)[0] == 'sequential'
  assert runner.choose_mode('auto', 'cpu', 8, 'vmap') == ('vmap', 'auto: kept from sweep.json')
  assert runner.choose_mode('processes', 'gpu', 8, 'vmap') == ('processes', 'asked')
  saved = json.loads((vmapped / 'sweep.json').read_text())  # its last run's explicit mode
  assert saved['mode'] in runner.MODES and saved['mode_chosen'] == 'asked'
  again = runner.run_sweep(SPEC, vmapped)  # auto by default; every member finished
  assert (again.data['mode'], again.data['mode_chosen']) == (saved['mode'],
                                                             'auto: kept from sweep.json')
  assert json.loads((vmapped / 'sweep.json').read_text())['mode'] == saved['mode']
  lines = []
  runner.run_sweep(SPEC, vmapped.parent / 'fresh_auto', dry_run=True, out=lines.append)
  assert lines[-1].endswith('mode sequential')
