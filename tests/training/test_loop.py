"""End-to-end tests of the training loop (vae/training/loop.py, vae/training/step.py, vae/training/run_dir.py) and train.py: outputs, exact resume, kills, bad input."""

import dataclasses
import datetime
import json
import re
import shutil
import signal
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae

from tests import record_fixtures
from tests.helpers import FIXTURES, SLOW_FLAGS, final_params, leaves, read_events, run_train
from tests.helpers import run_script, smoke_config, tensorboard_values
from vae import config_lib
from vae.data import input_pipeline
from vae.training import estimates
from vae.families import models
from vae.training import checkpointing, loop, optim
from vae.training import run as run_lib
from vae.training import chunks, migration, run_dir, run_record, step, validation

def test_smoke_run_writes_everything(smoke_run):
  tmp_path, result = smoke_run
  assert result['status'] == 'finished' and result['step'] == 24
  events = read_events(tmp_path)
  train = [e for e in events if e['event'] == 'train']
  evals = [e for e in events if e['event'] == 'eval']
  assert [e['step'] for e in train] == list(range(4, 25, 4))
  assert [e['step'] for e in evals] == [12, 24]
  for key in ('train/loss', 'train/elbo', 'train/recon', 'train/kl', 'train/beta', 'train/lr',
              'train/grad_norm', 'train/param_norm'):
    assert np.isfinite(train[-1][key]), key
  assert train[-1]['examples_seen'] == 24 * 64 and train[-1]['epoch'] == 2.0
  for split in ('val', 'test'):
    e = evals[-1]
    assert e[f'{split}/elbo'] == pytest.approx(e[f'{split}/recon'] - e[f'{split}/kl'], abs=1e-3)
    assert e[f'{split}/kl'] > 0 and e[f'{split}/elbo'] < 0
    assert e[f'{split}/bpd'] == pytest.approx(-e[f'{split}/elbo'] / (784 * np.log(2)), rel=1e-5)
    assert e[f'{split}/count'] == 256
  assert train[-1]['train/loss'] < train[0]['train/loss']  # it learns
  assert json.loads((tmp_path / 'config.json').read_text())['model']['latent_dim'] == 20
  for kind in ('samples', 'reconstructions'):
    png = tmp_path / 'images' / f'{kind}_00000024.png'
    assert png.stat().st_size > 500
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                if p.name.isdigit()) == [12, 24]


def test_resume_equals_uninterrupted(smoke_run, tmp_path):
  straight, split = smoke_run[0], tmp_path / 'split'
  first = loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0}), str(split))
  assert first['step'] == 12
  second = loop.train_and_evaluate(smoke_config(), str(split))
  assert second['step'] == 24
  assert read_events(straight) == read_events(split)
  step_a, params_a = final_params(straight)
  step_b, params_b = final_params(split)
  assert step_a == step_b == 24
  chex.assert_trees_all_equal(params_a, params_b)


def test_images_every_epochs_thins_images_and_changes_no_number(smoke_run, tmp_path):
  # Evaluations at steps 12 and 24; images only at the last (24 = 2 epochs), and the
  # metrics equal the run with images at every evaluation: images draw no random numbers.
  work = tmp_path / 'thin'
  result = loop.train_and_evaluate(smoke_config(**{'train.images_every_epochs': 2.0}), str(work))
  assert result['step'] == 24
  assert sorted(p.name for p in (work / 'images').iterdir()) == [
      'reconstructions_00000024.png', 'samples_00000024.png']
  assert {p.name for p in (smoke_run[0] / 'images').iterdir()} >= {
      'reconstructions_00000012.png', 'samples_00000012.png'}
  assert read_events(work) == read_events(smoke_run[0])
  assert [e['step'] for e in read_events(work) if e['event'] == 'eval'] == [12, 24]


def test_images_follow_their_own_cadence_across_evaluations():
  # 10 steps per epoch, evaluations every 10 steps, 95 steps in all.
  def images_at(images_every):
    s = loop.Schedule(10, 95, 5, 10, 10, images_every)
    return [t for t in list(range(10, 95, 10)) + [95] if s.is_images(t)]
  assert images_at(0) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
  assert images_at(30) == [30, 60, 90, 95]
  assert images_at(25) == [30, 50, 80, 95]  # the first evaluation at or after 25, 50, 75
  assert images_at(5) == images_at(0)
  c = smoke_config(**{'train.images_every_epochs': 2.5})
  assert loop.Schedule.from_config(c, 768).images_every == 30  # 12 steps per epoch
  assert loop.Schedule.from_config(smoke_config(), 768).images_every == 0


def test_kill_and_restart_matches_uninterrupted(slow_reference, tmp_path):
  ref = slow_reference
  work = tmp_path / 'killed'
  proc = run_train(work, *SLOW_FLAGS, wait=False)
  deadline = time.time() + 120
  while time.time() < deadline:  # kill -9 once a few checkpoints exist, mid-run
    ckpts = list((work / 'checkpoints').glob('[0-9]*')) if (work / 'checkpoints').exists() else []
    if len(ckpts) >= 2:
      break
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert run_train(work, *SLOW_FLAGS).returncode == 0
  assert read_events(work) == read_events(ref)
  steps = [(e['event'], e['step']) for e in read_events(work)]
  assert len(steps) == len(set(steps))
  chex.assert_trees_all_equal(final_params(work)[1], final_params(ref)[1])


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  proc = run_train(tmp_path, '--config.train.num_epochs=200', *SLOW_FLAGS[1:], wait=False)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if 'step ' in line and '/' in line:  # training has started
      proc.send_signal(signal.SIGTERM)
      break
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out
  said = re.search(r'SIGTERM received: checkpoint committed at step (\d+)', ''.join(lines) + out)
  assert said, out
  ckpt = checkpointing.Checkpointer(tmp_path / 'checkpoints')
  last = ckpt.latest_step()
  ckpt.close()
  assert int(said.group(1)) == last  # the step it names is on disk
  assert 0 < last < 200 * 12
  assert max(e['step'] for e in read_events(tmp_path)) == last


@pytest.mark.parametrize('flag,message', [
    ('--config.model.latent_dim=0', 'model.latent_dim=0 must be >= 1'),
    ('--config.objective.beta=-1.0', 'objective.beta=-1.0 must be >= 0'),
    ('--config.model.likelihood=poisson', "model.likelihood='poisson' is unknown"),
    ('--config.data.source=auto --config.data.name=nosuchset',
     "dataset 'nosuchset' not found offline"),
    ('--config.train.batch_size=100000', 'exceeds the 768 training examples'),
    ('--config.model.nosuchkey=1', 'nosuchkey'),
    ('--config.train.batch_size=abc', 'batch_size'),
])
def test_bad_config_fails_fast_with_one_line(tmp_path, flag, message):
  workdir = tmp_path / 'w'
  result = run_train(workdir, *flag.split())
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert not (workdir / 'checkpoints').exists()


def test_bad_config_does_not_touch_an_existing_run(tmp_path):
  assert run_train(tmp_path, '--config.train.num_epochs=1').returncode == 0
  before = (tmp_path / 'metrics.jsonl').read_text()
  result = run_train(tmp_path, '--config.model.latent_dim=3')
  assert result.returncode == 2
  assert 'holds a run with another config (model.latent_dim: 20 -> 3)' in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert (tmp_path / 'metrics.jsonl').read_text() == before


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(config_lib.ConfigError, match='cannot write to workdir'):
    loop.train_and_evaluate(smoke_config(), str(blocker / 'sub'))


def test_nan_stops_naming_the_step_and_writes_no_checkpoint(tmp_path):
  with pytest.raises(step.NonFiniteError, match=r'NaN/Inf at step \d+; no checkpoint'):
    loop.train_and_evaluate(smoke_config(**{'optim.lr': 1e30}), str(tmp_path))
  ckpt = checkpointing.Checkpointer(tmp_path / 'checkpoints')
  assert ckpt.steps() == []
  ckpt.close()


def test_second_trainer_on_same_workdir_is_refused(tmp_path):
  lock = run_dir.WorkdirLock(tmp_path)
  try:
    with pytest.raises(config_lib.ConfigError, match='in use by another trainer'):
      loop.train_and_evaluate(smoke_config(), str(tmp_path))
  finally:
    lock.release()


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0}), str(tmp_path))
  (tmp_path / 'config.json').unlink()  # get past the workdir config check
  with pytest.raises(checkpointing.CheckpointError, match='model.latent_dim=20 but this '
                     'config has 5'):
    loop.train_and_evaluate(smoke_config(**{'model.latent_dim': 5}), str(tmp_path))


def test_train_chunk_compiles_once_for_any_length():
  c = smoke_config()
  model = models.build_model(c.model, (28, 28, 1))
  tx, lr_fn = optim.make_optimizer(c.optim, 10, 100)
  keys = step.root_keys(0)
  state = step.init_state(model, tx, (28, 28, 1), keys, False)
  step_fn = step.make_train_step(model, tx, lr_fn, _options(c), None)
  driver = chunks.make_train_chunk(step_fn, chunks.ChunkLayout(10, 8), _options(c))
  pure = driver.run
  chunk = jax.jit(chex.assert_max_traces(pure, n=1))
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (80, 28, 28, 1)), jnp.uint8)
  hp = step.hyperparameters(c, 10)
  order, fresh_state = driver.no_order(images), state
  # Lengths that end on an epoch's last step (3 + 7), start inside one, and cross one.
  for n in (3, 7, 1, 10, 4):
    state, means, bad, order = chunk(state, images, keys['data'], hp, n, order)
  assert int(state.step) == 25 and int(bad) == -1 and int(order[0]) == 2
  assert np.isfinite(float(means['loss']))
  # The order a chunk hands on is the one each chunk would draw afresh: the same batches.
  fresh = jax.jit(pure)
  for n in (3, 7, 1, 10, 4):
    fresh_state, fresh_means, _, fresh_order = fresh(fresh_state, images, keys['data'], hp, n)
  chex.assert_trees_all_equal(fresh_state.params, state.params)
  chex.assert_trees_all_equal(fresh_means, means)
  chex.assert_trees_all_equal(fresh_order, order)
  np.testing.assert_array_equal(
      order[1], input_pipeline.epoch_permutation(keys['data'], 2, 80))


def test_host_streamed_data_with_parameter_ema(tmp_path):
  result = loop.train_and_evaluate(
      smoke_config(**{'data.residency': 'host', 'optim.ema_decay': 0.5}), str(tmp_path))
  assert result['status'] == 'finished' and result['step'] == 24
  assert np.isfinite(result['test/elbo']) and result['test/elbo'] < -100
  # Evaluation used the EMA parameters, which vae.load also returns.
  m = vae.load(tmp_path, 'latest')
  images, _ = m.load_split('test')
  assert float(np.mean(m.elbo(m.to_float(images)))) == pytest.approx(result['test/elbo'],
                                                                      abs=15.0)


def test_periodic_iw_nll_and_posterior_collapse_warning(tmp_path, caplog):
  caplog.set_level('WARNING', logger='vae')
  cfg = smoke_config(**{'train.num_epochs': 1.0, 'train.eval_iw_samples': 8,
                        'objective.beta': 200.0})
  result = loop.train_and_evaluate(cfg, str(tmp_path))
  assert result['val/iw_nll'] == pytest.approx(-result['val/iw_ll'])
  assert result['val/iw_ll'] >= result['val/elbo'] - 0.5
  assert result['val/active_units'] <= 2
  assert any('posterior collapse' in r.message for r in caplog.records)


def _options(c):
  """The StepOptions of config `c` on the CPU, with the plain Bernoulli draw."""
  return dataclasses.replace(step.step_options(c, 'cpu'), mode='bernoulli')


def test_host_dispatched_loop_equals_device_loop():
  c = smoke_config()
  model = models.build_model(c.model, (28, 28, 1))
  tx, lr_fn = optim.make_optimizer(c.optim, 10, 100)
  keys = step.root_keys(0)
  step_fn = step.make_train_step(model, tx, lr_fn, _options(c), None)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (80, 28, 28, 1)), jnp.uint8)
  hp = step.hyperparameters(c, 10)
  out = {}
  for loop in ('device', 'host'):
    chunk = chunks.make_train_chunk(step_fn, chunks.ChunkLayout(10, 8),
                                    dataclasses.replace(_options(c), chunk_loop=loop)).run
    chunk = jax.jit(chunk) if loop == 'device' else chunk
    state = step.init_state(model, tx, (28, 28, 1), keys, False)
    order = None
    for n in (7, 6):  # crosses an epoch boundary
      state, means, bad, order = chunk(state, images, keys['data'], hp, n, order)
    out[loop] = (state, means, int(bad))
  assert int(out['host'][0].step) == 13 and out['host'][2] == -1
  chex.assert_trees_all_close(out['host'][0].params, out['device'][0].params, rtol=1e-5,
                              atol=1e-6)
  chex.assert_trees_all_close(out['host'][1], out['device'][1], rtol=1e-5)


def test_mapped_members_equal_vmapped_members_skip_a_stopped_one_and_report_nan():
  """train.member_loop: 'map' (each member's chunk in turn) trains the members of a group as
  'vmap' does (same batches and keys, float rounding apart); a member whose hp['active'] is
  0 keeps its parameters and only its step advances; a member whose loss is NaN makes the
  chunk report that step."""
  c = smoke_config()
  model = models.build_model(c.model, (28, 28, 1))
  tx, lr_fn = optim.make_optimizer(c.optim, 10, 100)
  keys = [step.root_keys(s) for s in (0, 1)]
  stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (80, 28, 28, 1)), jnp.uint8)
  step_fn = step.make_train_step(model, tx, lr_fn, _options(c), None, freezable=True)
  state0 = stack([step.init_state(model, tx, (28, 28, 1), k, False) for k in keys])
  data_keys = jnp.stack([k['data'] for k in keys])
  hp = stack([step.hyperparameters(smoke_config(**{'objective.beta': b}), 10)
              for b in (1.0, 3.0)])
  out = {}
  for member_loop in ('vmap', 'map'):
    options = dataclasses.replace(_options(c), member_loop=member_loop)
    chunk = jax.jit(chunks.make_train_chunk(step_fn, chunks.ChunkLayout(10, 8, False, 2),
                                            options).run)
    state = state0
    order = None
    for n in (7, 6):  # crosses an epoch boundary
      state, means, bad, order = chunk(state, images, data_keys, hp, n, order)
      assert int(bad) == -1
    stopped = dict(hp, active=jnp.array([1.0, 0.0]))
    frozen, _, bad, _ = chunk(state, images, data_keys, stopped, 4, order)
    nan = dict(hp, beta=jnp.array([1.0, jnp.nan]))
    _, _, nan_bad, _ = chunk(state, images, data_keys, nan, 4)
    # Streamed from the host: each member its own batches, [T, M, B, H, W, C].
    streamed = jax.jit(chunks.make_train_chunk(step_fn, chunks.ChunkLayout(10, 8, True, 2),
                                               options).run)
    fed, _, _, _ = streamed(state0, images.reshape(5, 2, 8, 28, 28, 1), data_keys, hp, 5)
    out[member_loop] = (state, means, frozen, int(bad), int(nan_bad), fed)
  (sv, mv, fv, bv, nv, dv), (sm, mm, fm, bm, nm, dm) = out['vmap'], out['map']
  assert sm.step.tolist() == [13, 13] and bm == bv == -1
  chex.assert_trees_all_close(sm.params, sv.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(dm.params, dv.params, rtol=1e-4, atol=1e-5)
  assert not np.allclose(dm.params['decoder']['output']['bias'][0],
                         dm.params['decoder']['output']['bias'][1])
  chex.assert_trees_all_close(mm, mv, rtol=1e-4, atol=1e-4)
  assert not np.allclose(mm['loss'][0], mm['loss'][1])  # two different members
  for f in (fv, fm):
    assert f.step.tolist() == [17, 17]
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[1], f.params),
                                jax.tree.map(lambda a: a[1], sm.params if f is fm else sv.params))
  assert not np.array_equal(fm.params['encoder']['mlp']['dense_0']['kernel'][0],
                            sm.params['encoder']['mlp']['dense_0']['kernel'][0])
  assert nv == nm == 13  # the NaN member's first step


def test_member_loop_auto_maps_on_one_cpu_device_and_vmaps_otherwise():
  for backend in ('cpu', 'gpu'):
    cpu = backend == 'cpu'
    assert step.member_loop(smoke_config(), 1, backend) == ('map' if cpu else 'vmap')
    assert step.member_loop(smoke_config(), 4, backend) == 'vmap'
    assert step.member_loop(smoke_config(**{'train.member_loop': 'vmap'}), 1, backend) == 'vmap'
    assert step.member_loop(smoke_config(**{'train.member_loop': 'map'}), 4, backend) == 'map'
    assert step.member_loop(smoke_config(**{'train.loop': 'host'}), 1, backend) == 'vmap'
  with pytest.raises(config_lib.ConfigError, match='choose auto, vmap or map'):
    validation.check_train(smoke_config(**{'train.member_loop': 'pmap'}))


def test_workdir_from_an_older_schema_is_migrated_then_loads_and_resumes(smoke_run, tmp_path,
                                                                         caplog):
  """A config.json saved before fields existed (here model.init_std, train.norm_metrics,
  data.binarize_bits and train.member_loop) is refused with one line naming
  scripts/migrate.py; migrated, it names the values it ran with, loads, and resumes with the
  same command and the older behaviour."""
  caplog.set_level('INFO', logger='vae')
  work = tmp_path / 'old'
  shutil.copytree(smoke_run[0], work)
  saved = json.loads((work / 'config.json').read_text())
  del saved['model']['init_std']
  del saved['train']['norm_metrics']
  del saved['data']['binarize_bits']
  del saved['train']['member_loop']
  del saved['schema_version']
  (work / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(checkpointing.CheckpointError, match='scripts/migrate.py --workdir'):
    vae.load(work)
  with pytest.raises(checkpointing.CheckpointError, match='predates'):
    loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 3.0}), str(work))
  assert sorted(migration.migrate(work, dry_run=True)) == sorted(
      [f'config.json: {k}={v!r} (the value this run was saved with)'
       for k, v in config_lib.LEGACY_VALUES.items() if k != 'model.bernoulli_impl']
      + ['config.json: schema_version=2'])
  assert 'schema_version' not in json.loads((work / 'config.json').read_text())  # a dry run
  migration.migrate(work)
  migrated = json.loads((work / 'config.json').read_text())
  assert migrated['schema_version'] == 2 and migrated['train']['norm_metrics'] == 'mean'
  assert migration.pending(work) == [] and migration.migrate(work) == []
  assert vae.load(work).latent_dim == 20
  result = loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 3.0}), str(work))
  assert result['step'] == 36
  # The run predates train.norm_metrics: it keeps the window means it logged before.
  now = json.loads((work / 'config.json').read_text())
  assert now['train']['norm_metrics'] == 'mean' and now['data']['binarize_bits'] == 32
  assert now['train']['member_loop'] == 'vmap'  # a group saved before 'map' keeps vmap
  assert any("saved with train.norm_metrics='mean'" in r.message for r in caplog.records)


def test_norm_metrics_last_reports_the_last_steps_norms_and_trains_the_same():
  """train.norm_metrics=last: one chunk of 3 steps reports the norms of its third step (a
  'mean' chunk of that step alone) and leaves the same parameters; the loss is the mean."""
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (80, 28, 28, 1)), jnp.uint8)
  out = {}
  for mode, lengths in (('last', (3,)), ('mean', (2, 1))):
    c = smoke_config(**{'train.norm_metrics': mode})
    model = models.build_model(c.model, (28, 28, 1))
    tx, lr_fn = optim.make_optimizer(c.optim, 10, 100)
    keys = step.root_keys(0)
    step_fn = step.make_train_step(model, tx, lr_fn, _options(c), None)
    chunk = jax.jit(chunks.make_train_chunk(step_fn, chunks.ChunkLayout(10, 8),
                                            _options(c)).run)
    state = step.init_state(model, tx, (28, 28, 1), keys, False)
    means = []
    for n in lengths:
      state, m, bad, _ = chunk(state, images, keys['data'], step.hyperparameters(c, 10), n)
      assert int(bad) == -1
      means.append(jax.device_get(m))
    out[mode] = (state, means)
  chex.assert_trees_all_equal(out['last'][0].params, out['mean'][0].params)
  last, (first_two, third) = out['last'][1][0], out['mean'][1]
  for key in ('grad_norm', 'param_norm'):
    assert last[key] == pytest.approx(third[key], rel=1e-6) and last[key] > 0
  assert last['loss'] == pytest.approx((2 * first_two['loss'] + third['loss']) / 3, rel=1e-5)


@pytest.mark.parametrize('name,overrides', [
    ('smoke_reference', {}),
    ('smoke_reference_legacy', config_lib.LEGACY_VALUES),
    ('exemplar_reference', record_fixtures.EXEMPLAR)])
def test_smoke_run_matches_the_recorded_fixture(tmp_path, name, overrides):
  """The smoke run equals its recording (tests/record_fixtures.py): `smoke_reference.*`
  with today's defaults, `smoke_reference_legacy.*` with the behaviour of runs saved before
  the speed fields (config_lib.LEGACY_VALUES: float32 binarization draws, norms averaged
  every step; recorded before the trainer was split into rooms), `exemplar_reference.*` a
  100-step run of the Exemplar prior recorded with the code before the prior's state moved
  behind the prior protocol (dbba767; its cache of exemplar means compared too). 1e-6
  relative on the machine class that recorded it, 1e-3 on another (XLA's CPU kernels
  differ between processor families)."""
  ref = json.loads((FIXTURES / f'{name}.json').read_text())
  rtol = 1e-6 if record_fixtures.cpu_model_name() == ref['recorded_on'] else 1e-3
  loop.train_and_evaluate(smoke_config(**overrides), str(tmp_path))
  got = read_events(tmp_path)
  assert [(e['event'], e['step']) for e in got] == [(e['event'], e['step'])
                                                     for e in ref['events']]
  for a, b in zip(got, ref['events']):
    assert a.keys() == b.keys()
    for key, value in b.items():
      if isinstance(value, float):
        assert a[key] == pytest.approx(value, rel=rtol, abs=rtol), key
      else:
        assert a[key] == value, key
  step_, params = final_params(tmp_path)
  assert step_ == ref['step']
  want = np.load(FIXTURES / f'{name}_params.npz')
  got_params = leaves(params)
  assert sorted(got_params) == sorted(want.files)
  for key, value in got_params.items():
    np.testing.assert_allclose(value, want[key], rtol=rtol, atol=rtol, err_msg=key)
  state_file = FIXTURES / f'{name}_state.npz'
  got_state = record_fixtures.final_state_leaves(tmp_path, step_)
  assert bool(got_state) == state_file.exists()
  if got_state:
    want = np.load(state_file)
    assert sorted(got_state) == sorted(want.files)
    for key, value in got_state.items():
      np.testing.assert_allclose(value, want[key], rtol=rtol, atol=rtol, err_msg=key)


def test_checkpoint_stores_parameters_once_as_their_own_item(smoke_run, tmp_path):
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), final_params(
      smoke_run[0])[1])
  reader = checkpointing.CheckpointReader(smoke_run[0] / 'checkpoints')
  params = reader.restore_params(24, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  assert jax.tree.structure(params) == jax.tree.structure(abstract)
  meta = ocp_handler_metadata(smoke_run[0] / 'checkpoints' / '24' / 'state')
  assert set(meta) == {'step', 'opt_state', 'rng'}  # no parameters in the rest of the state
  # With an EMA, `params` holds the EMA and the raw parameters travel with the optimizer.
  loop.train_and_evaluate(smoke_config(**{'optim.ema_decay': 0.5, 'train.num_epochs': 1.0}),
                          str(tmp_path))
  meta = ocp_handler_metadata(tmp_path / 'checkpoints' / '12' / 'state')
  assert set(meta) == {'step', 'opt_state', 'rng', 'params'}


def ocp_handler_metadata(path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return dict(ocp.StandardCheckpointHandler().metadata(path))


def test_checkpoint_written_before_the_rooms_split_is_migrated_then_loads_and_resumes(
    tmp_path):
  """tests/fixtures/pre_rooms_workdir was written by the old trainer (whole state in one item,
  no checksums, no speed fields): refused with one line until scripts/migrate.py rewrites it,
  then it loads and resumes."""
  work = tmp_path / 'old'
  shutil.copytree(FIXTURES / 'pre_rooms_workdir', work)
  with pytest.raises(checkpointing.CheckpointError, match='single-item layout'):
    vae.load(work)
  code, out, err = run_script('migrate', '--workdir', work)
  assert code == 0, err
  assert 'changed checkpoints/12: single-item layout -> params + state' in out
  assert (work / 'checkpoints' / '12' / 'params').is_dir()
  assert (work / 'checkpoints' / '12' / 'checksums').is_dir()
  assert not (work / migration.MIGRATION_DIR).exists()
  m = vae.load(work)
  assert m.step == 12 and m.latent_dim == 2
  images, _ = m.load_split('test')
  assert -700 < float(np.mean(m.elbo(m.to_float(images)))) < -400
  config = smoke_config(**{'model.hidden': (8,), 'model.latent_dim': 2, 'train.num_epochs': 2.0,
                           'train.keep_checkpoints': 1, 'train.num_image_samples': 1})
  result = loop.train_and_evaluate(config, str(work))
  assert result['step'] == 24 and result['status'] == 'finished'
  assert [e['step'] for e in read_events(work) if e['event'] == 'eval'] == [12, 24]
  assert vae.load(work, 'latest').step == 24
  assert run_script('migrate', '--workdir', tmp_path / 'nowhere')[0] == 2


def test_signal_before_the_first_step_exits_cleanly(tmp_path):
  """SIGINT while the run is still loading: no traceback, exit 0, nothing to resume from."""
  proc = run_train(tmp_path, wait=False)
  deadline = time.time() + 60
  while not (tmp_path / 'config.json').exists() and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out
  if 'before the first step' in out:  # else the signal came after the first chunk: also clean
    assert not list((tmp_path / 'checkpoints').glob('[0-9]*'))


def test_run_record_names_the_code_versions_and_sessions(smoke_run):
  record = json.loads((smoke_run[0] / 'run.json').read_text())
  session = record['sessions'][-1]
  assert session['versions']['jax'] == jax.__version__
  assert session['commit'] is None or len(session['commit']) == 40
  assert isinstance(session['dirty'], (bool, type(None)))
  assert session['devices'] and session['host'] and session['cpu']
  assert session['status'] == 'finished' and session['end_step'] == 24
  assert session['end'] >= session['start']
  for moment in ('start', 'end'):  # ISO dates beside the Unix seconds, the same moment
    assert session[f'{moment}_iso'] == datetime.datetime.fromtimestamp(
        int(session[moment]), datetime.timezone.utc).isoformat()
  assert run_record.training_seconds(smoke_run[0]) == pytest.approx(
      session['end'] - session['start'])


def test_training_seconds_counts_killed_sessions_to_their_last_kept_event(tmp_path):
  # Two sessions killed (no end recorded), then one that finished. The killed ones count to
  # their last metrics event before the next session began; the gaps between sessions do not.
  sessions = [{'start': 1000.0, 'end': None}, {'start': 5000.0, 'end': None},
              {'start': 9000.0, 'end': 9500.0}]
  (tmp_path / 'run.json').write_text(json.dumps({'sessions': sessions}))
  events = [(100, 1200.0), (200, 1700.0),             # session 1: 700 s
            (300, 5100.0), (400, 5400.0),             # session 2: 400 s
            (500, 9200.0)]                            # session 3: its recorded end counts
  (tmp_path / 'metrics.jsonl').write_text(''.join(
      json.dumps({'event': 'eval', 'step': s, 'wall_time': t}) + '\n' for s, t in events))
  assert run_record.training_seconds(tmp_path) == pytest.approx(700 + 400 + 500)
  # A killed session that logged nothing counts 0; so does everything without metrics.
  (tmp_path / 'metrics.jsonl').unlink()
  assert run_record.training_seconds(tmp_path) == pytest.approx(500)


def test_tensorboard_has_hparams_images_and_the_config(smoke_run):
  values = tensorboard_values(smoke_run[0] / 'tensorboard')
  tags = {tag for tag, _, _ in values}
  assert {'train/loss', 'test/elbo', 'val/elbo'} <= tags
  assert any(tag == 'images/reconstructions' and image for tag, _, image in values)
  assert any(tag == 'images/samples' and image for tag, _, image in values)
  assert any(plugin == 'text' and 'config' in tag for tag, plugin, _ in values)
  assert any(plugin == 'hparams' for _, plugin, _ in values)
  # A run alone shows every field, latent size, beta and seed first; a sweep member only
  # what its sweep varies (tests/sweeps: test_tensorboard_reads_one_run_per_member...).
  config_json = json.loads((smoke_run[0] / 'config.json').read_text())
  alone = run_lib.hparams(config_json)
  assert list(alone)[:3] == ['model.latent_dim', 'objective.beta', 'seed']
  assert len(alone) == len(config_lib.flatten(config_json))
  assert alone['model.hidden'] == str(tuple(config_json['model']['hidden']))
  assert list(run_lib.hparams(config_json, ('objective.beta', 'seed'))) == [
      'objective.beta', 'seed']
  assert run_lib.swept_fields(smoke_run[0]) == ()


def test_training_images_are_labelled_and_readable(smoke_run):
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  png = matplotlib.image.imread(smoke_run[0] / 'images' / 'samples_00000024.png')
  assert png.shape[1] >= 8 * 28 * 3  # 3 screen pixels per image pixel
  assert png.shape[0] > 2 * 28 * 3 + 20  # room for the title above 2 rows of 8


def test_early_stopping_and_the_best_checkpoint_follow_validation_not_test(tmp_path,
                                                                          monkeypatch):
  """Validation and test ELBO made to disagree (scripted per evaluation, everything else
  real): validation peaks at epoch 2 while test keeps improving. Early stopping (patience 2
  epochs) stops at epoch 4, and `vae.load(w, 'best')` is epoch 2's checkpoint; ranked by the
  test ELBO the run would train all 8 epochs and call the last one best."""
  scripted = {'val': [-300.0, -200.0, -250.0, -260.0, -270.0, -280.0, -290.0, -295.0],
              'test': [-300.0, -290.0, -280.0, -150.0, -140.0, -130.0, -120.0, -110.0]}
  calls = {'val': 0, 'test': 0}
  real = estimates.summarize_sums

  def summarize(sums, num_dims, split, *args, **kwargs):
    out = real(sums, num_dims, split, *args, **kwargs)
    out[f'{split}/elbo'] = scripted[split][calls[split]]
    calls[split] += 1
    return out

  monkeypatch.setattr(estimates, 'summarize_sums', summarize)
  w = tmp_path / 'w'
  result = loop.train_and_evaluate(smoke_config(**{
      'train.num_epochs': 8.0, 'train.early_stopping_epochs': 2.0}), str(w))
  spe = 12  # steps per epoch of the smoke config
  assert result['status'] == 'early_stopped'
  assert result['step'] == 4 * spe
  assert vae.load(w, 'best').step == 2 * spe
  evals = [e for e in read_events(w) if e['event'] == 'eval']
  assert [e['val/elbo'] for e in evals] == scripted['val'][:4]


def test_without_a_validation_split_best_is_the_latest_never_chosen_on_test(tmp_path):
  """No early stopping there (a config error); "best" falls back to the latest checkpoint
  and the summary row to the last evaluation, however the test ELBO moved."""
  from vae.reporting import summaries  # pylint: disable=g-import-not-at-top
  w = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{
      'data.val_size': 0, 'train.num_epochs': 3.0, 'train.eval_every_epochs': 1.0,
      'train.checkpoint_every_epochs': 1.0, 'train.keep_checkpoints': 5}), str(w))
  ckpt = checkpointing.CheckpointReader(w / 'checkpoints')
  assert len(ckpt.steps()) == 3 and ckpt.best_step() is None
  assert vae.load(w, 'best').step == ckpt.steps()[-1]
  evals = [e for e in read_events(w) if e['event'] == 'eval']
  assert len(evals) == 3 and all('val/elbo' not in e for e in evals)
  row = summaries.member_row('m', {}, w)
  assert row['best_val_step'] is None and row['test_elbo'] == evals[-1]['test/elbo']


@pytest.mark.parametrize('member_loop', ['map', 'vmap'])
def test_exemplar_prior_resumes_bit_identically_and_trains_in_a_vmapped_group(tmp_path,
                                                                               member_loop):
  """The Exemplar prior's cache of exemplar means lives in the train state and its
  checkpoints: a run stopped after one epoch and resumed ends with the parameters of an
  uninterrupted one. Two members of one program (betas 0.5, 2) follow their runs alone: the
  cache refresh at an epoch's start is a branch on an unbatched flag, under vmap too."""
  from vae.sweeps import runner  # pylint: disable=g-import-not-at-top
  ov = {'model.prior': 'exemplar', 'model.exemplar_candidates': 300,
        'model.latent_dim': 3, 'train.member_loop': member_loop}
  a, b = tmp_path / 'a', tmp_path / 'b'
  loop.train_and_evaluate(smoke_config(**ov, **{'objective.beta': 0.5}), str(a))
  if member_loop == 'map':
    loop.train_and_evaluate(smoke_config(**ov, **{'objective.beta': 0.5,
                                                  'train.num_epochs': 1.0}), str(b))
    loop.train_and_evaluate(smoke_config(**ov, **{'objective.beta': 0.5}), str(b))
    pa, pb = leaves(final_params(a)[1]), leaves(final_params(b)[1])
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
  record = runner.run_sweep('configs/default.py:smoke,sweep=tiny', tmp_path / 'sw', mode='vmap',
                            axes={'model.latent_dim': ['3'], 'objective.beta': ['0.5', '2.0']},
                            config_overrides={k: v for k, v in ov.items()
                                              if k != 'model.latent_dim'})
  assert [m['status'] for m in record.data['members']] == ['finished', 'finished']
  member = next(m for m in record.data['members'] if m['overrides']['objective.beta'] == 0.5)
  alone = [e for e in read_events(a) if e['event'] == 'eval']
  grouped = [e for e in read_events(tmp_path / 'sw' / member['name']) if e['event'] == 'eval']
  assert [e['step'] for e in alone] == [e['step'] for e in grouped]
  for x, y in zip(alone, grouped):
    assert x['test/elbo'] == pytest.approx(y['test/elbo'], rel=2e-4, abs=2e-3)


def test_run_json_records_the_device_timeline_and_the_boundary_seconds(smoke_run):
  workdir, _ = smoke_run
  timing = json.loads((workdir / 'run.json').read_text())['sessions'][-1]['timing']
  for window in ('whole', 'steady'):
    t = timing[window]
    assert 0.0 <= t['host_stall_share'] <= 1.0
    assert 0.0 < t['device_busy_s'] <= t['wall_s'] + 1e-3
  assert timing['steady']['wall_s'] <= timing['whole']['wall_s']
  assert timing['eval_s'] > 0 and timing['checkpoint_background_s'] > 0
  # The closing line's shares of the wall time add up (first chunk, busy, idle).
  line = loop.closing_line(timing)
  shares = [float(v) for v in re.findall(r'([\d.]+) %', line)]
  assert len(shares) == 3 and sum(shares) == pytest.approx(100.0, abs=0.2), line
  assert 'overlapping the device' in line


def test_wall_clock_checkpoints_add_saves_and_change_no_number(smoke_run, tmp_path, caplog):
  """train.checkpoint_every_minutes (here: at every boundary) saves at log boundaries too,
  in the background, without orbax's per-save warning, and trains exactly as before."""
  w = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{'train.checkpoint_every_minutes': 1e-9,
                                          'train.keep_checkpoints': 10}), str(w))
  steps = checkpointing.CheckpointReader(w / 'checkpoints').steps()
  assert steps == [4, 8, 12, 16, 20, 24]  # every log boundary, not only epochs 1 and 2
  assert not [r for r in caplog.records if 'did not provide metrics' in r.getMessage()]
  ref_step, ref = final_params(smoke_run[0])
  step_, got = final_params(w)
  assert step_ == ref_step
  for k, v in leaves(ref).items():
    np.testing.assert_array_equal(leaves(got)[k], v)
  assert read_events(w) == read_events(smoke_run[0])


def test_eval_every_auto_gives_a_short_run_three_evaluations_and_a_saved_number_is_kept(
    tmp_path):
  """train.eval_every_epochs='auto' is min(5, num_epochs / 3): a 3-epoch run is evaluated
  3 times (it was once, at 5); a run saved with a number resumes with it under 'auto'; and
  data.max_train_examples trains on the first N examples (recorded in data.json)."""
  spec = lambda **kw: validation.spec(smoke_config(**kw))
  assert loop.eval_every_epochs(spec(**{'train.eval_every_epochs': 'auto',
                                        'train.num_epochs': 3.0}).train) == 1.0
  assert loop.eval_every_epochs(spec(**{'train.eval_every_epochs': 'auto',
                                        'train.num_epochs': 30.0}).train) == 5.0
  first = smoke_config(**{'train.eval_every_epochs': 1.5, 'train.num_epochs': 3.0,
                          'data.max_train_examples': 512})
  loop.train_and_evaluate(first, str(tmp_path))
  data = json.loads((tmp_path / 'data.json').read_text())
  assert data['num_train'] == 512 and data['max_train_examples'] == 512
  longer = smoke_config(**{'train.eval_every_epochs': 'auto', 'train.num_epochs': 6.0,
                           'data.max_train_examples': 512})
  result = loop.train_and_evaluate(longer, str(tmp_path))  # auto alone: every 2 epochs
  evals = [e['epoch'] for e in read_events(tmp_path) if e['event'] == 'eval']
  assert result['status'] == 'finished' and evals == [1.5, 3.0, 4.5, 6.0]
  assert json.loads((tmp_path / 'config.json').read_text())['train']['eval_every_epochs'] == 1.5
