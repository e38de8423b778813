"""The package is installed (`make` runs `pip install -e . --no-deps`): importable anywhere."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

from tests.helpers import FIXTURES, REPO
from vae.training import migration


def test_vae_imports_and_loads_outside_the_repository(tmp_path):
  """In a subprocess whose working directory is outside the repository and with no
  PYTHONPATH (the repository's conftest puts it on the path, so in-process proves nothing)."""
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  work = tmp_path / 'old'
  shutil.copytree(FIXTURES / 'pre_rooms_workdir', work)
  migration.migrate(work)  # it predates today's layout (tests/training/test_loop.py)
  code = ('import vae, pathlib; m = vae.load(r"%s"); '
          'print(m.step, m.latent_dim, pathlib.Path(vae.__file__).parent.name)' % work)
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['12', '2', 'vae']


def test_compilation_cache_makes_a_relaunch_reuse_compiled_programs(tmp_path, monkeypatch):
  """train.py turns on XLA's persistent cache (vae/commands/cli.py): the second identical launch finds
  entries written by the first; VAE_COMPILATION_CACHE=off leaves no cache."""
  cache = tmp_path / 'cache'
  env = dict(os.environ, VAE_COMPILATION_CACHE=str(cache))
  cmd = [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py:smoke']
  first = subprocess.run(cmd + ['--workdir', str(tmp_path / 'a')], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-2000:]
  entries = sorted(p.name for p in cache.iterdir())
  assert entries, 'the first launch wrote no cache entries'
  second = subprocess.run(cmd + ['--workdir', str(tmp_path / 'b')], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-2000:]
  # The programs that take seconds to compile (the training chunk, the initialization) came
  # from the cache; a small program whose compile time lands near the cache's 0.5 s floor may
  # be written by either launch, so only those two are checked by name.
  new = {p.name for p in cache.iterdir()} - set(entries)
  assert any(n.startswith('jit_chunk') for n in entries), entries
  assert not [n for n in new if n.startswith(('jit_chunk', 'jit__member_init'))], new
  monkeypatch.setenv('VAE_COMPILATION_CACHE', 'off')
  from vae.commands import compilation_cache  # pylint: disable=g-import-not-at-top
  assert compilation_cache.enable() is None


CONV_PROBE = r'''
import os, re, sys
import vae  # sets the flag before JAX opens a backend
import jax, jax.numpy as jnp, numpy as np
print(os.environ.get('XLA_FLAGS', ''))
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 14, 14, 16)).astype(np.float32)
dy = rng.normal(size=(8, 14, 14, 32)).astype(np.float32)
conv = lambda k: jax.lax.conv_general_dilated(jnp.asarray(x), k, (1, 1), 'SAME',
                                              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
grad = jax.jit(lambda k, dy: jax.vjp(conv, k)[1](dy)[0])
k0 = jnp.zeros((3, 3, 16, 32))
hlo = grad.lower(k0, dy).compile().as_text()
ynn = [l for l in hlo.splitlines() if '__ynn_fusion' in l]
xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
want = np.stack([np.stack([np.einsum('bhwc,bhwd->cd', xp[:, i:i + 14, j:j + 14], dy)
                           for j in range(3)]) for i in range(3)])
err = float(np.max(np.abs(np.asarray(grad(k0, dy)) - want)))
square = jnp.ones((512, 512))
dot = jax.jit(lambda a, b: a @ b).lower(square, square).compile().as_text()
print('ynn_convolutions', len(ynn), 'max_error', err, 'ynn_dot', int('__ynn_fusion' in dot))
'''


def test_cpu_convolutions_run_outside_ynnpack_and_stay_exact(tmp_path):
  """`import vae` adds CPU_CONV_FLAG to XLA_FLAGS (unless the user set a ynn fusion type):
  the compiled kernel gradient of a convolution is not a YNNPACK fusion, dots still are, and
  the gradient matches a float64 reference."""
  import vae  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', CONV_PROBE], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  flags, probe = out.stdout.strip().splitlines()[-2:]
  assert vae.CPU_CONV_FLAG in flags.split()
  words = probe.split()
  assert words[1] == '0' and float(words[3]) < 1e-3 and words[5] == '1', probe
  # A user's own setting wins: here YNNPACK gets the convolutions back.
  env['XLA_FLAGS'] = '--xla_cpu_experimental_ynn_fusion_type=individual_convolution'
  out = subprocess.run([sys.executable, '-c', CONV_PROBE], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  flags, probe = out.stdout.strip().splitlines()[-2:]
  assert vae.CPU_CONV_FLAG not in flags.split()
  assert probe.split()[1] != '0' and float(probe.split()[3]) < 1e-3, probe


def _console(name):
  """A console script of pyproject.toml, as `make` installs it into the environment."""
  path = pathlib.Path(sys.executable).parent / name
  assert path.exists(), f'{path} is missing: reinstall the package (pip install -e . --no-deps)'
  return str(path)


def test_console_scripts_train_and_sweep_from_outside_the_repository(tmp_path):
  """From a directory outside the repository, with no PYTHONPATH: vae-train trains the
  two-level config's smoke run (configs found through the installed package), and a
  `processes` sweep starts its member through the package's own entry point."""
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=600)
  out = run(_console('vae-train'), '--config', 'configs/fashion_mnist_hvae.py:smoke=True',
            '--workdir', 'hvae')
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads((tmp_path / 'hvae' / 'done.json').read_text())['status'] == 'finished'
  assert 'test/kl_z2=' in out.stdout  # the two-level model's metrics
  out = run(_console('vae-sweep'), '--config', 'configs/default.py:smoke,sweep=tiny', '--workdir',
            'sw', '--mode', 'processes', '--axis', 'model.latent_dim=3', '--axis',
            'objective.beta=0.5')
  assert out.returncode == 0, out.stderr[-2000:]
  member = json.loads((tmp_path / 'sw' / 'sweep.json').read_text())['members'][0]
  assert member['status'] == 'finished' and member.get('returncode') == 0
  assert (tmp_path / 'sw' / member['name'] / 'done.json').exists()
