"""Scale-out tests: 8 fake CPU devices, a real two-process jax.distributed run, bf16."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import vae
from tests.helpers import REPO, read_events, final_params, smoke_config
from vae.training import loop

FLAGS = ('--config.train.num_epochs=1',)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train_cmd(workdir, *extra):
  return [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py:smoke',
          '--workdir', str(workdir), *FLAGS, *extra]


def _losses(workdir, last_step=12):
  return np.array([e['train/loss'] for e in read_events(workdir)
                   if e['event'] == 'train' and e['step'] <= last_step])


def _eval_at(workdir, step=12):
  return [e for e in read_events(workdir) if e['event'] == 'eval' and e['step'] == step][0]


@pytest.fixture
def single(smoke_run):
  """The single-process, single-device reference: its first epoch (steps 1..12)."""
  return smoke_run[0]


def test_eight_fake_devices_match_one_device(single, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run(_train_cmd(tmp_path), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  np.testing.assert_allclose(_losses(tmp_path), _losses(single), rtol=1e-4)
  ev8, ev1 = _eval_at(tmp_path), _eval_at(single)
  assert ev8['test/count'] == ev1['test/count'] == 256
  assert ev8['test/elbo'] == pytest.approx(ev1['test/elbo'], rel=1e-4)


def test_batch_must_divide_over_data_axis(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run(_train_cmd(tmp_path, '--config.train.batch_size=60'), cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert 'train.batch_size=60 does not divide over the 8 devices' in out.stderr


def test_two_processes_match_single_process_and_restore_in_one(single, tmp_path):
  port = _free_port()
  procs = [subprocess.Popen(
      _train_cmd(tmp_path, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                 f'--process_id={i}'), cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  np.testing.assert_allclose(_losses(tmp_path), _losses(single), rtol=1e-4)
  ev2, ev1 = _eval_at(tmp_path), _eval_at(single)
  assert ev2['test/count'] == 256  # every example once across both hosts
  assert ev2['test/elbo'] == pytest.approx(ev1['test/elbo'], rel=1e-4)
  steps = [(e['event'], e['step']) for e in read_events(tmp_path)]
  assert len(steps) == len(set(steps))  # only process 0 wrote
  _, params2 = final_params(tmp_path)
  params1 = vae.load(single, 12).params
  np.testing.assert_allclose(_flat(params2), _flat(params1), rtol=1e-3, atol=1e-5)
  # The two-process checkpoint restores in this single process, and training resumes.
  model = vae.load(tmp_path, 'latest')
  assert model.step == 12
  result = loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 2.0}), str(tmp_path))
  assert result['step'] == 24


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(v)) for v in _leaves(tree)])


def test_bfloat16_compute_stays_close_to_float32(single, tmp_path):
  result = loop.train_and_evaluate(
      smoke_config(**{'train.num_epochs': 1.0, 'model.compute_dtype': 'bfloat16'}),
      str(tmp_path))
  bf16, fp32 = _losses(tmp_path), _losses(single)
  np.testing.assert_allclose(bf16, fp32, rtol=0.02)
  assert result['test/elbo'] == pytest.approx(_eval_at(single)['test/elbo'], rel=0.02)
  _, params = final_params(tmp_path)
  assert all(np.asarray(v).dtype == np.float32 for v in _leaves(params))


def test_dataset_is_split_over_the_data_axis_with_padding():
  code = ('import numpy as np, jax\n'
          'from vae.training import sharding\n'
          'mesh = sharding.make_mesh()\n'
          'x = sharding.put_examples(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), mesh)\n'
          'assert x.shape == (16, 1, 1, 1), x.shape\n'
          'assert len(x.addressable_shards) == 8\n'
          'assert x.addressable_shards[0].data.shape == (2, 1, 1, 1)\n'
          'assert np.array_equal(np.asarray(x)[:10, 0, 0, 0], np.arange(10))\n'
          'assert np.all(np.asarray(x)[10:] == 0)\n'
          'm = sharding.make_model_mesh(4)\n'
          'assert dict(m.shape) == {"model": 4, "data": 2}, m.shape\n'
          'assert dict(sharding.make_model_mesh(5).shape) == {"model": 1, "data": 8}\n'
          'print("ok")\n')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


@pytest.mark.slow  # ~1 min of two-process runs; `make test-all` runs it
@pytest.mark.parametrize('victim', [1, 0], ids=['worker killed', 'coordinator killed'])
def test_a_dead_host_stops_the_survivor_promptly_with_one_line(tmp_path, victim):
  """kill -9 one process of a 2-process run: the other exits with code 5 within 30 s,
  one line naming the lost process and how to resume, no traceback, no core-dump text."""
  port = _free_port()
  procs = [subprocess.Popen(
      _train_cmd(tmp_path, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                 f'--process_id={i}', '--heartbeat_timeout_s=10',
                 '--config.train.num_epochs=400'),
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
  deadline = time.time() + 240
  while not list(tmp_path.glob('checkpoints/[0-9]*')) and time.time() < deadline:
    time.sleep(0.1)  # training is under way on both
  procs[victim].kill()
  procs[victim].wait()
  survivor = procs[1 - victim]
  t0 = time.time()
  err = survivor.communicate(timeout=120)[1]
  assert time.time() - t0 < 30
  assert survivor.returncode == 5, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and f'lost process {victim}' in errors[0]
  assert 'rerun the same command' in errors[0]
  assert 'Traceback' not in err and 'Check failure stack trace' not in err
  assert ' @ ' not in err and '    @     0x' not in err
