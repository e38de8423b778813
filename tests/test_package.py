"""The package is installed (`make` runs `pip install -e . --no-deps`): importable anywhere."""

import os
import subprocess
import sys

from tests.helpers import FIXTURES


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
