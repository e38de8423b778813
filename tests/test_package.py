"""The package is installed (`make` runs `pip install -e . --no-deps`): importable anywhere."""

import os
import subprocess
import sys

from tests.helpers import FIXTURES, REPO


def test_vae_imports_and_loads_outside_the_repository(tmp_path):
  """In a subprocess whose working directory is outside the repository and with no
  PYTHONPATH (the repository's conftest puts it on the path, so in-process proves nothing)."""
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  code = ('import vae, pathlib; m = vae.load(r"%s"); '
          'print(m.step, m.latent_dim, pathlib.Path(vae.__file__).parent.name)'
          % (FIXTURES / 'pre_rooms_workdir'))
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['12', '2', 'vae']


def test_compilation_cache_makes_a_relaunch_reuse_compiled_programs(tmp_path, monkeypatch):
  """train.py turns on XLA's persistent cache (vae/cli.py): the second identical launch finds
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
  assert sorted(p.name for p in cache.iterdir()) == entries  # every program came from it
  monkeypatch.setenv('VAE_COMPILATION_CACHE', 'off')
  from vae import cli  # pylint: disable=g-import-not-at-top
  assert cli.enable_compilation_cache() is None
