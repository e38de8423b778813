"""Integrity under damaged files and bad input (docs/reliability.md lists every case).

Each bad input must give exactly one `error:` line naming the field, file or path, a
documented exit code (vae/commands/cli.py), and leave what was in the workdir unchanged. Damaged
checkpoints and metrics are recovered from with a warning. Command lines are called
in-process through their `main(argv)` (tests/helpers.py: run_script).
"""

import errno
import hashlib
import os
import json
import shutil
import subprocess
import sys
import textwrap

import chex
import numpy as np
import pytest

import vae
from tests.helpers import REPO, final_params, read_events, run_script, smoke_config
from vae import config_lib
from vae.commands import cli
from vae.training import checkpointing, loop, metrics_io

SMOKE = 'configs/default.py:smoke'


def snapshot(root):
  """{relative path: sha256} of every file below `root` (the lock file aside)."""
  if not root.exists():
    return {}
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file() and p.name != '.lock'}


@pytest.fixture
def work(smoke_run, tmp_path):
  """A copy of the finished smoke run (checkpoints at 12 and 24)."""
  dst = tmp_path / 'work'
  shutil.copytree(smoke_run[0], dst)
  return dst


def _npz(tmp_path, **arrays):
  path = tmp_path / 'data.npz'
  rng = np.random.default_rng(0)
  base = {'x_train': rng.integers(0, 256, (300, 28, 28), np.uint8),
          'y_train': np.zeros(300, np.int64),
          'x_test': rng.integers(0, 256, (100, 28, 28), np.uint8),
          'y_test': np.zeros(100, np.int64)}
  base.update(arrays)
  np.savez(path, **base)
  return path


def _nan_pixels(tmp_path):
  x = np.random.default_rng(0).random((300, 28, 28)).astype(np.float32)
  x[5, 3, 3] = np.nan
  return _npz(tmp_path, x_train=x)


def _garbage_npz(tmp_path):
  path = tmp_path / 'data.npz'
  path.write_bytes(b'this is not a zip archive' * 10)
  return path


NPZ = ('--config.data.source=npz', '--config.data.name=mine', '--config.data.val_size=50')

# (name, set-up of the workdir and extra files -> flags, expected exit code, text the one
# error line must contain). `work` is a finished smoke run whose files must not change.
TRAIN_CASES = [
    ('unknown config key', lambda w, t: ['--config.model.nosuchkey=1'], 2, 'model.nosuchkey'),
    ('misspelt key: did you mean', lambda w, t: ['--config.model.latent_dm=3'], 2,
     'did you mean model.latent_dim'),
    ('wrong type', lambda w, t: ['--config.train.batch_size=abc'], 2, 'train.batch_size'),
    ('wrong type inside a tuple', lambda w, t: ['--config.model.hidden=abc'], 2,
     'model.hidden'),
    ('bad argument after the colon', lambda w, t: ['--config=configs/default.py:smoke,nosuch=1'],
     2, "unknown config argument 'nosuch'"),
    ('missing config file', lambda w, t: ['--config=configs/nope.py'], 2, 'configs/nope.py'),
    ('config file with a syntax error',
     lambda w, t: [f'--config={_write(t / "bad_cfg.py", "def get_config(:")}'], 2,
     'bad_cfg.py'),
    ('non-finite value', lambda w, t: ['--config.train.num_epochs=inf'], 2, 'train.num_epochs'),
    ('NaN value', lambda w, t: ['--config.optim.lr=nan'], 2, 'optim.lr'),
    ('negative split seed', lambda w, t: ['--config.data.split_seed=-1'], 2, 'data.split_seed'),
    ('empty --workdir', lambda w, t: ['--workdir='], 2, '--workdir'),
    ('a --workdir too long for the file system',
     lambda w, t: [f'--workdir={t / ("x" * 300) / "run"}'], 2, 'a path too long'),
    ('fewer epochs than the checkpoint', lambda w, t: ['--config.train.num_epochs=1'], 2,
     'train.num_epochs=1.0 ends at step 12'),
    ('another structural config', lambda w, t: ['--config.model.latent_dim=3'], 2,
     'model.latent_dim: 20 -> 3'),
    ('damaged config.json', lambda w, t: _damage(w / 'config.json', b'{"model": '), 2,
     'config.json is damaged'),
    ('damaged done.json', lambda w, t: _damage(w / 'done.json', b'\x00\x01'), 2,
     'done.json is damaged'),
    ('data.path that does not exist (fresh workdir)',
     lambda w, t: [*NPZ, f'--config.data.path={t / "missing.npz"}'], 2,
     "data.path='/"),
    ('NaN pixels in an npz (fresh workdir)', lambda w, t: [*NPZ, f'--config.data.path={_nan_pixels(t)}'], 2,
     'NaN or infinite pixel values'),
    ('an npz that is not a zip (fresh workdir)', lambda w, t: [*NPZ, f'--config.data.path={_garbage_npz(t)}'],
     2, 'is not a readable .npz archive'),
    ('image shapes differ between splits (fresh workdir)',
     lambda w, t: [*NPZ, '--config.data.path=' + str(_npz(
         t, x_test=np.zeros((100, 14, 14), np.uint8)))], 2, 'different shapes across splits'),
    ('empty test split (fresh workdir)',
     lambda w, t: [*NPZ, '--config.data.path=' + str(_npz(
         t, x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.int64)))], 2,
     'empty test split'),
    ('.lock that is a directory', lambda w, t: _replace_with_dir(w / '.lock'), 2, '.lock'),
    ('checkpoints that is a file', lambda w, t: _replace_with_file(w / 'checkpoints'), 2,
     'checkpoints is a file'),
    ('every checkpoint replaced by a file, done.json gone',
     lambda w, t: _checkpoints_replaced_by_files(w), 2, 'no checkpoint in'),
    ('latent size 1e9 (fresh workdir)', lambda w, t: ['--config.model.latent_dim=1000000000'],
     2, 'mostly from model.latent_dim=1000000000'),
    ('hidden width 1e8 (fresh workdir)', lambda w, t: ['--config.model.hidden=(100000000,)'],
     2, 'model.hidden=(100000000,)'),
    ('a mixture of 1e8 components (fresh workdir)',
     lambda w, t: ['--config.model.prior=mog', '--config.model.prior_components=100000000'], 2,
     'model.prior_components=100000000'),
    ('1e8 picture samples (fresh workdir)',
     lambda w, t: ['--config.train.num_image_samples=100000000'], 2,
     'train.num_image_samples=100000000'),
    ('1e12 importance samples at evaluation (fresh workdir)',
     lambda w, t: ['--config.train.eval_iw_samples=1000000000000'], 2,
     'train.eval_iw_samples=1000000000000 must be in [0, 2147483647]'),
    ('1e8 importance samples at each evaluation (fresh workdir)',
     lambda w, t: ['--config.train.eval_iw_samples=100000000'], 2,
     'train.eval_iw_samples=100000000 on the 512 images of each evaluation is 5.12e+10 draws'),
    ('1e6 importance samples in the objective (fresh workdir)',
     lambda w, t: ['--config.objective.num_samples=1000000'], 2, 'objective.num_samples=1000000'),
    ('tensorboard that is a link', lambda w, t: _replace_with_link(w / 'tensorboard', t), 2,
     'tensorboard is a link'),
    ('.lock that is a link to a file outside', lambda w, t: _replace_with_link(w / '.lock', t),
     2, '.lock'),
]


def _write(path, text):
  path.write_text(text)
  return path


def _damage(path, data):
  path.write_bytes(data)
  return []


def _replace_with_dir(path):
  if path.exists():
    path.unlink()
  path.mkdir()
  return []


def _checkpoints_replaced_by_files(work):
  (work / 'done.json').unlink()
  for step_dir in (work / 'checkpoints').iterdir():
    if step_dir.name.isdigit():
      _replace_with_file(step_dir)
  return []


def _replace_with_link(path, tmp):
  """`path` replaced by a symlink to a file outside the workdir, which must stay as it is."""
  victim = tmp / 'outside.txt'
  victim.write_text('not ours')
  if path.is_dir():
    shutil.rmtree(path)
  elif path.exists():
    path.unlink()
  path.symlink_to(victim)
  return []


def _replace_with_file(path):
  shutil.rmtree(path)
  path.write_text('not a directory')
  return []


def _assert_one_error_line(err, text):
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  assert text in lines[0], (text, lines[0])
  assert 'Traceback' not in err


@pytest.mark.parametrize('name,setup,code,text', TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input(work, tmp_path, name, setup, code, text):
  if 'fresh workdir' in name:  # a new run: nothing may be written but the lock
    work = tmp_path / 'fresh'
  flags = setup(work, tmp_path)
  before = snapshot(work)
  argv = ['--config', SMOKE, '--workdir', str(work)]
  if any(f.startswith('--config=') for f in flags):
    argv = argv[2:]
  if any(f.startswith('--workdir=') for f in flags):
    argv = [a for a in argv if a not in ('--workdir', str(work))]
  rc, _, err = run_script('train', *argv, *flags)
  assert rc == code, err
  _assert_one_error_line(err, text)
  assert snapshot(work) == before
  outside = tmp_path / 'outside.txt'  # what a planted link points to is never written
  assert not outside.exists() or outside.read_text() == 'not ours'


def test_full_disk_is_one_line_naming_the_workdir(work, monkeypatch):
  """ENOSPC injected into the first write of a resumed run: exit 4, nothing changed."""
  def full(path, text):
    raise OSError(errno.ENOSPC, 'No space left on device', str(path))
  monkeypatch.setattr(metrics_io, '_atomic_write', full)
  before = snapshot(work)
  rc, _, err = run_script('train', '--config', SMOKE, '--workdir', work,
                          '--config.train.num_epochs=3')
  assert rc == cli.EXIT_IO
  _assert_one_error_line(err, f'no space left on the device while writing {work}')
  assert snapshot(work) == before


def test_a_full_disk_in_other_threads_leaves_only_the_one_error_line(tmp_path):
  """With a command line's logging (cli.setup_logging), a full disk's exception logged by a
  writer thread (as orbax's do) or raised in one prints nothing; other errors still print."""
  code = textwrap.dedent("""
      import errno, logging, threading
      from vae.commands import cli
      cli.setup_logging()
      full = OSError(errno.ENOSPC, 'No space left on device', '/w/checkpoints/24')
      def writer():
        try:
          raise full
        except OSError:
          logging.getLogger('absl').error('write failed', exc_info=True)
        raise full
      t = threading.Thread(target=writer); t.start(); t.join()
      t = threading.Thread(target=lambda: 1 / 0); t.start(); t.join()
      """)
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert 'No space left' not in out.stderr and 'write failed' not in out.stderr, out.stderr
  assert 'ZeroDivisionError' in out.stderr  # only the full disk is left to the error line


def test_the_output_probe_finds_a_full_disk_before_the_work(tmp_path, monkeypatch):
  """metrics_io.check_writable writes PROBE_BYTES and syncs them (an empty probe passes on a
  full disk); an ENOSPC there is one line naming the path, and no probe file is left."""
  sizes = []
  real_fsync = os.fsync
  monkeypatch.setattr(os, 'fsync', lambda fd: sizes.append(os.fstat(fd).st_size) or
                      real_fsync(fd))
  metrics_io.check_writable(tmp_path / 'eval.json')
  assert sizes == [metrics_io.PROBE_BYTES] and metrics_io.PROBE_BYTES >= 1 << 16
  def full(fd):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(os, 'fsync', full)
  with pytest.raises(config_lib.ConfigError, match='eval.json .No space left on device.'):
    metrics_io.check_writable(tmp_path / 'eval.json')
  assert list(tmp_path.iterdir()) == []


SCRIPT_CASES = [
    ('evaluate', ['--num_samples', '0'], 2, '--num_samples'),
    ('evaluate', ['--batch_size', 'x'], 2, '--batch_size'),
    ('evaluate', ['--checkpoint', '99999'], 2, 'no checkpoint at step 99999'),
    ('evaluate', ['--checkpoint', 'newest'], 2, "checkpoint 'newest' is not best"),
    ('evaluate', ['--out', '{file}/eval.json', '--num_samples', '5'], 2, 'eval.json'),
    ('evaluate', ['--num_samples', str(10 ** 12)], 2, 'past 2,147,483,647 (samples are counted'),
    ('evaluate', ['--num_samples', '100', '--batch_size', str(10 ** 9)], 2,
     'lower --batch_size or --chunk_size'),
    ('visualize', ['--what', 'manifold', '--out', '{tmp}/v.png', '--grid', '0'], 2, '--grid'),
    ('visualize', ['--what', 'nosuch', '--out', '{tmp}/v.png'], 2, '--what'),
    ('visualize', ['--what', 'manifold', '--out', '{tmp}/v.png', '--grid', '10000'], 2,
     '10000 must be <= 200'),
    ('gradient_variance', ['--out', '{tmp}/g.png', '--samples', '1,0'], 2, '--samples'),
    ('compare_ae_vae', ['--vae', '{work}', '--ae', '{work}', '--out', '{tmp}/c.png'], 2,
     'holds a model.type=vae run'),
]


@pytest.mark.parametrize('script,argv,code,text', SCRIPT_CASES,
                         ids=[f'{c[0]} {" ".join(c[1])}' for c in SCRIPT_CASES])
def test_script_bad_input(work, tmp_path, script, argv, code, text):
  (tmp_path / 'file').write_text('a file, not a directory')
  fill = lambda a: a.format(work=work, tmp=tmp_path, file=tmp_path / 'file')
  argv = [fill(a) for a in argv]
  if script in ('evaluate', 'visualize'):
    argv = ['--workdir', str(work)] + argv
  before = snapshot(work)
  rc, _, err = run_script(script, *argv)
  assert rc == code, err
  _assert_one_error_line(err, text)
  assert snapshot(work) == before


def test_evaluate_refuses_an_unwritable_output_before_computing(work, tmp_path):
  (tmp_path / 'file').write_text('x')
  rc, out, err = run_script('evaluate', '--workdir', work, '--out', tmp_path / 'file' / 'e.json')
  assert rc == 2 and out == ''  # nothing was computed (no table printed)
  _assert_one_error_line(err, 'e.json')


def _flip_byte(step_dir):
  """Flips one bit in the middle of the largest array file of a saved step."""
  files = [p for p in (step_dir / 'params').rglob('*') if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0x10
  target.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['flipped bit', 'truncated metadata', 'empty checksums'])
def test_damaged_newest_checkpoint_falls_back_and_resumes_bit_identical(smoke_run, work, damage,
                                                                        caplog):
  step_dir = work / 'checkpoints' / '24'
  if damage == 'flipped bit':
    _flip_byte(step_dir)
  elif damage == 'truncated metadata':
    (step_dir / 'metrics' / 'metrics').write_bytes(b'')
  else:
    (step_dir / 'checksums' / 'metadata').write_bytes(b'')
  (work / 'done.json').unlink()  # the run must retrain from the fallback
  caplog.set_level('WARNING', logger='vae')
  result = loop.train_and_evaluate(smoke_config(), str(work))
  assert result['step'] == 24
  assert any('cannot be restored' in r.message for r in caplog.records)
  assert list((work / 'checkpoints').glob('24.corrupt-*'))  # kept for inspection
  assert read_events(work) == read_events(smoke_run[0])
  chex.assert_trees_all_equal(final_params(work)[1], final_params(smoke_run[0])[1])


def test_vae_load_refuses_a_named_damaged_step_and_skips_an_implicit_one(work, caplog):
  _flip_byte(work / 'checkpoints' / '24')
  before = snapshot(work)
  with pytest.raises(checkpointing.CheckpointError, match='checkpoints/24 is damaged'):
    vae.load(work, 24)
  caplog.set_level('WARNING', logger='vae')
  m = vae.load(work, 'latest')
  assert m.step == 12 and any('damaged' in r.message for r in caplog.records)
  rc, _, err = run_script('evaluate', '--workdir', work, '--checkpoint', '24')
  assert rc == 2
  _assert_one_error_line(err, 'is damaged')
  assert snapshot(work) == before  # reading never moves or rewrites anything


def test_vae_load_retries_checkpoints_rotated_away_while_it_reads(work, monkeypatch, caplog):
  """A trainer still saving rotates old steps away: vae.load('latest') whose step vanishes
  while it reads lists the steps again (here 36 has appeared, 24 and 12 are gone) instead of
  calling them damaged."""
  ckpts = work / 'checkpoints'
  real = checkpointing.CheckpointReader.restore_params
  def rotating(self, step, sharding):
    if step == 24 and (ckpts / '24').exists():
      shutil.copytree(ckpts / '24', ckpts / '36')
      shutil.rmtree(ckpts / '24')
      shutil.rmtree(ckpts / '12')
      raise FileNotFoundError(str(ckpts / '24'))
    return real(self, step, sharding)
  monkeypatch.setattr(checkpointing.CheckpointReader, 'restore_params', rotating)
  caplog.set_level('WARNING', logger='vae')
  assert vae.load(work, 'latest').step == 36
  assert not any('damaged' in r.message for r in caplog.records)


def test_vae_load_reads_verified_parameters_past_damaged_orbax_metadata(work):
  """Empty manager metadata of the newest step no longer stops every load: its parameters
  still match their checksums, so they load; 'best' ranks only the steps it can read."""
  (work / 'checkpoints' / '24' / 'metrics' / 'metrics').write_bytes(b'')
  before = snapshot(work)
  assert vae.load(work, 'latest').step == 24
  assert vae.load(work, 'best').step == 12
  assert snapshot(work) == before


def test_malformed_metrics_line_is_moved_aside_and_every_event_kept(work, caplog):
  lines = (work / 'metrics.jsonl').read_text().splitlines()
  good = [json.loads(line) for line in lines]
  lines.insert(3, '{"event": "train", "step": 1')  # damaged in the middle of the file
  (work / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  caplog.set_level('WARNING', logger='vae')
  metrics_io.MetricsWriter(work, resume_step=24).close()
  assert [json.loads(line) for line in (work / 'metrics.jsonl').read_text().splitlines()] == good
  side = list(work.glob('metrics.jsonl.malformed-*'))
  assert len(side) == 1 and side[0].read_text() == '{"event": "train", "step": 1\n'
  assert any('malformed' in r.message for r in caplog.records)


def test_api_validates_its_inputs(smoke_run):
  m = vae.load(smoke_run[0])
  images, _ = m.load_split('test')
  # uint8 images get the fixed evaluation binarization: the same as load_split + to_float.
  np.testing.assert_allclose(m.elbo(images[:64]), m.elbo(m.to_float(images[:64])))
  raw = vae.load(smoke_run[0])
  assert float(np.mean(raw.elbo(images[:64]))) < 0  # never a +1e7 from unscaled pixels
  with pytest.raises(ValueError, match=r'shape \(64, 784\); this model takes \[N, 28, 28, 1\]'):
    m.elbo(images[:64].reshape(64, -1))
  with pytest.raises(ValueError, match=r'latents have shape \(2, 3\); this model takes'):
    m.decode(np.zeros((2, 3)))
  with pytest.raises(ValueError, match='num_samples >= 1'):
    m.log_likelihood(images[:4], 0)
  with pytest.raises(ValueError, match='n >= 1'):
    m.sample(None, 0)
  with pytest.raises(ValueError, match='NaN'):
    m.encode(np.full((1, 28, 28, 1), np.nan, np.float32))


def test_vae_load_of_damaged_workdir_files_is_one_line(work):
  (work / 'data.json').write_text('{')
  with pytest.raises(config_lib.ConfigError, match='data.json is damaged'):
    vae.load(work)
  with pytest.raises(checkpointing.CheckpointError, match='no config.json'):
    vae.load(work / 'nope')


@pytest.mark.parametrize('impostor', ['a file', 'a link to the previous step',
                                      'a dangling link'])
def test_a_newest_step_that_is_not_a_checkpoint_directory_is_moved_aside(tmp_path, caplog,
                                                                        impostor):
  """A step entry that is a file was overwritten by the next save; a link to another step
  loaded as that step. Now it is moved to <step>.corrupt-<time> with one warning and the
  run resumes from the previous real step, ending as an uninterrupted run."""
  overrides = {'train.checkpoint_every_epochs': 0.5, 'train.keep_checkpoints': 5}
  work = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 1.0, **overrides}), str(work))
  newest = work / 'checkpoints' / '12'
  shutil.rmtree(newest)
  if impostor == 'a file':
    newest.write_text('not a checkpoint')
  elif impostor == 'a dangling link':
    newest.symlink_to(work / 'checkpoints' / 'nowhere')
  else:
    newest.symlink_to(work / 'checkpoints' / '6')
  caplog.set_level('WARNING')
  result = loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 2.0, **overrides}),
                                   str(work))
  assert result['step'] == 24
  kind = 'a file' if impostor == 'a file' else 'a link'
  assert any(f'is {kind}, not a checkpoint directory' in r.message for r in caplog.records)
  aside = list((work / 'checkpoints').glob('12.corrupt-*'))
  assert len(aside) == 1 and (aside[0].is_symlink() or aside[0].is_file())
  straight = tmp_path / 'straight'
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 2.0, **overrides}), str(straight))
  assert read_events(work) == read_events(straight)


def test_a_damaged_validation_metric_is_named_and_best_is_chosen_among_the_rest(tmp_path,
                                                                              caplog):
  work = tmp_path / 'w'
  loop.train_and_evaluate(smoke_config(**{'train.num_epochs': 3.0,
                                          'train.keep_checkpoints': 5}), str(work))
  reader = checkpointing.CheckpointReader(work / 'checkpoints')
  best = reader.best_step()
  metric = work / 'checkpoints' / str(best) / 'metrics' / 'metrics'
  metric.write_text('{"val_elbo": ')  # torn
  caplog.set_level('WARNING')
  again = reader.best_step()
  assert again != best and again in reader.steps()
  assert any(f'validation metric of checkpoint {best} ' in r.message and 'is damaged' in r.message
             for r in caplog.records)
  assert vae.load(work, 'best').step == again


@pytest.fixture
def tiny_disk(tmp_path):
  """mount(path, size) -> path: a small tmpfs there (root only; skipped where it cannot be
  mounted), a disk that fills; unmounted after the test."""
  mounted = []

  def mount(path, size):
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
      pytest.skip(f'cannot mount a tmpfs here ({out.stderr.strip()})')
    mounted.append(path)
    return path

  try:
    yield mount
  finally:
    for path in mounted:
      subprocess.run(['umount', '-l', str(path)], check=False)


def _train_on(work):
  """train.py's smoke run in `work`: (exit code, stderr)."""
  cmd = [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py:smoke',
         '--workdir', str(work)]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONUNBUFFERED='1'))
  return out.returncode, out.stderr


def test_a_full_tensorboard_disk_is_exit_4_not_a_hang(tiny_disk, tmp_path):
  """tensorboardX's writer thread died on the full disk and every later write waited on its
  full queue: the run hung, SIGTERM ignored. Events are now written in the loop's thread."""
  work = tmp_path / 'w'
  tiny_disk(work / 'tensorboard', '8k')
  code, err = _train_on(work)
  assert code == 4, err[-3000:]
  assert 'Traceback' not in err and err.count('error: ') == 1, err[-3000:]


def test_a_full_disk_is_exit_4_and_one_line_also_on_rerun(tiny_disk, tmp_path):
  """A real full disk (tmpfs): the run ends with exit 4 and one `error:` line, without
  orbax's dozen `Event loop is closed` tracebacks; a rerun on the still-full disk is exit 4
  too (it was reported as bad input, exit 2), with advice to free space."""
  work = tiny_disk(tmp_path / 'disk', '600k') / 'w'
  for _ in range(2):
    code, err = _train_on(work)
    assert code == 4, err[-3000:]
    assert 'Traceback' not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'no space left' in errors[0], err[-3000:]
