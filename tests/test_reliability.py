"""Fault injection: kills (also mid-checkpoint), corrupt checkpoints, divergence, bad input.

docs/reliability.md lists each guarantee next to the test here that shows it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import pytest

from tests.helpers import REPO, SLOW_FLAGS, read_events, final_params, run_train, smoke_config
from vae.data import datasets
from vae.training import checkpointing, loop


@pytest.fixture
def reference(slow_reference):
  return slow_reference


def _env(**extra):
  return dict(os.environ, PYTHONUNBUFFERED='1', **extra)


def test_kill_during_checkpoint_write_then_resume(reference, tmp_path):
  cmd = [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py:smoke',
         '--workdir', str(tmp_path), *SLOW_FLAGS]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=_env(VAE_INJECT_KILL_DURING_SAVE='18', VAE_INJECT_KILL_DELAY_S='0.005'))
  assert out.returncode == -9  # SIGKILL while orbax was writing step 18
  ckpt = checkpointing.Checkpointer(tmp_path / 'checkpoints')
  assert ckpt.steps() == [6, 12]  # the half-written step 18 is not a checkpoint
  ckpt.close()
  assert run_train(tmp_path, *SLOW_FLAGS).returncode == 0
  assert read_events(tmp_path) == read_events(reference)
  chex.assert_trees_all_equal(final_params(tmp_path)[1], final_params(reference)[1])


def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, caplog):
  work = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0,
                                             'train.checkpoint_every_epochs': 0.5}), str(work))
  # Truncate every data file of the latest checkpoint (step 12).
  for f in (work / 'checkpoints' / '12' / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0 and 'ocdbt' in str(f):
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  caplog.set_level('WARNING')
  result = loop.train_and_evaluate(smoke_config(**{'train.checkpoint_every_epochs': 0.5}),
                                      str(work))
  assert result['step'] == 24
  assert any('cannot be restored' in r.message for r in caplog.records)
  assert list((work / 'checkpoints').glob('12.corrupt-*'))  # kept, not deleted
  straight = tmp_path / 'straight'
  loop.train_and_evaluate(smoke_config(**{'train.checkpoint_every_epochs': 0.5}),
                             str(straight))
  assert read_events(work) == read_events(straight)


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  cmd = [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py:smoke',
         '--workdir', str(tmp_path)]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=_env(VAE_INJECT_NAN_AT_STEP='17'))
  assert out.returncode == 3
  assert 'NaN/Inf at step 17' in out.stderr and 'last good checkpoint: step 12' in out.stderr
  ckpt = checkpointing.Checkpointer(tmp_path / 'checkpoints')
  assert ckpt.steps() == [12]
  ckpt.close()
  # The good checkpoint resumes (here without the injected fault) to the end.
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())
  assert again.returncode == 0, again.stderr[-2000:]
  assert max(e['step'] for e in read_events(tmp_path)) == 24


@pytest.mark.parametrize('flags,message', [
    (('--config.model.arch=conv', '--config.model.conv_channels=(8,16,32)'),
     'needs H and W divisible by 8, got 28x28'),
    (('--config.data.source=auto', '--config.data.name=not_a_dataset'),
     "dataset 'not_a_dataset' not found offline"),
    (('--config.optim.name=rmsprop',), "optim.name='rmsprop' is unknown"),
])
def test_more_bad_inputs_fail_before_compiling(tmp_path, flags, message):
  out = run_train(tmp_path / 'w', *flags)
  assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
  assert len(out.stderr.strip().splitlines()[-1]) < 600
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_checkpoint_from_another_dataset_is_refused(tmp_path):
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0}), str(tmp_path))
  (tmp_path / 'config.json').unlink()
  # Other data is refused from its content (data.json's hashes) ...
  with pytest.raises(datasets.DataError, match='splits train, validation, test differ'):
    loop.train_and_evaluate(smoke_config(**{'data.synthetic_shape': (32, 32, 1)}),
                            str(tmp_path))
  # ... and, the change accepted, a checkpoint of another shape still is, from its metadata.
  with pytest.raises(checkpointing.CheckpointError, match='trained on data shape'):
    loop.train_and_evaluate(smoke_config(**{'data.synthetic_shape': (32, 32, 1),
                                            'data.accept_changed_data': True}), str(tmp_path))


@pytest.mark.slow
def test_random_kills_at_scale(tmp_path):
  """Several kill -9 at random moments (scripts/fault_injection.py), then equality."""
  out = subprocess.run([sys.executable, str(REPO / 'scripts' / 'fault_injection.py'), '--workdir',
                        str(tmp_path), '--kills', '4', '--seed', '1'], capture_output=True, text=True,
                       cwd=REPO, timeout=1200)
  assert out.returncode == 0, out.stdout + out.stderr[-2000:]
  report = json.loads(out.stdout)
  assert report['equal_events'] and report['equal_params'] and report['no_duplicates']





@pytest.mark.parametrize('script,sig', [('train.py', 'SIGINT'), ('scripts/summarize.py', 'SIGINT'),
                                        ('scripts/evaluate.py', 'SIGTERM')])
def test_a_signal_while_the_package_imports_is_one_line(tmp_path, script, sig):
  """From a command's first instruction: a signal that arrives while `vae` itself imports
  (held open 2 s by VAE_INJECT_IMPORT_DELAY_S) waits for the handler, then gives one
  `error:` line and exit 128 + the signal, no KeyboardInterrupt traceback."""
  signum = getattr(signal, sig)
  args = {'train.py': ['--config', 'configs/default.py:smoke', '--workdir', str(tmp_path)],
          'scripts/evaluate.py': ['--workdir', str(tmp_path)],
          'scripts/summarize.py': [str(tmp_path)]}[script]
  proc = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=dict(_env(), VAE_INJECT_IMPORT_DELAY_S='2'))
  time.sleep(0.8)  # the interpreter has started; the package's import sleeps until ~2 s
  assert proc.poll() is None, proc.stderr.read()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  lines = [line for line in err.splitlines() if line.strip()]
  assert proc.returncode == 128 + signum, err
  assert len(lines) == 1 and lines[0].startswith('error: ') and f'by {sig}' in lines[0], err


@pytest.mark.parametrize('script,sig,delay_s', [
    ('train.py', 'SIGTERM', 0.3),      # while the libraries load
    ('scripts/evaluate.py', 'SIGTERM', 0.3),
    ('scripts/evaluate.py', 'SIGINT', 6.0),  # setup, compilation or the estimate itself
    ('scripts/summarize.py', 'SIGINT', 0.3),
], ids=['train.py SIGTERM during imports', 'evaluate.py SIGTERM during imports',
        'evaluate.py SIGINT while it evaluates', 'summarize.py SIGINT during imports'])
def test_commands_answer_signals_from_their_first_second(smoke_run, tmp_path, script, sig,
                                                        delay_s):
  """A signal before training's own handling (or to a command without any) gives one
  `error:` line naming it, no traceback, and exit 128 + the signal, within seconds; nothing
  of the finished run changes."""
  signum = getattr(signal, sig)
  work = tmp_path / 'work'
  shutil.copytree(smoke_run[0], work)
  args = {'train.py': ['--config', 'configs/default.py:smoke', '--workdir', str(work)],
          'scripts/evaluate.py': ['--workdir', str(work), '--num_samples', '100000'],
          'scripts/summarize.py': [str(work)]}[script]
  proc = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=_env())
  time.sleep(delay_s)
  assert proc.poll() is None, proc.stderr.read()
  t0 = time.time()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  waited = time.time() - t0
  lines = [line for line in err.splitlines() if line.strip()]
  assert proc.returncode == 128 + signum, err
  assert lines[-1].startswith('error: ') and f'interrupted by {sig}' in lines[-1], err
  assert 'Traceback' not in err
  assert waited < 30, waited  # one compilation at most on two loaded cores
  assert not (work / 'eval.json').exists()
