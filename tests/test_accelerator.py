"""`make` picks the jax wheel for the machine: scripts/accelerator.sh with a fake nvidia-smi."""

import os
import subprocess

from tests.helpers import REPO

SCRIPT = REPO / 'scripts' / 'accelerator.sh'
PINNED = next(line.split('==')[1].strip() for line in (REPO / 'requirements.txt').open()
              if line.startswith('jax=='))
SMI = 'echo "GPU 0: NVIDIA H200 (UUID: GPU-1234)"; echo "| NVIDIA-SMI 580.1  CUDA Version: {}.0 |"'


def _run(tmp_path, nvidia_smi=None, **env):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  if nvidia_smi is not None:
    fake = bin_dir / 'nvidia-smi'
    fake.write_text(f'#!/bin/sh\n{nvidia_smi}\n')
    fake.chmod(0o755)
  path = f'{bin_dir}:/usr/bin:/bin'  # no real nvidia-smi on these machines
  clean = {k: v for k, v in os.environ.items() if k not in ('TPU_NAME', 'VAE_ACCELERATOR')}
  out = subprocess.run(['bash', str(SCRIPT)], env=dict(clean, PATH=path, **env),
                       capture_output=True, text=True, timeout=30)
  return out.returncode, out.stdout.strip()


def test_gpu_machine_gets_the_wheel_of_its_driver(tmp_path):
  """CUDA 13 drivers: the pair measured on an H200; older ones: the CPU pin's CUDA 12."""
  assert _run(tmp_path, SMI.format(13)) == (0, 'jax[cuda13]==0.11.2')
  assert _run(tmp_path, SMI.format(12)) == (0, f'jax[cuda12]=={PINNED}')
  assert _run(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-1234)"') == (
      0, f'jax[cuda12]=={PINNED}')  # no version shown: the older wheels
  assert _run(tmp_path, VAE_ACCELERATOR='cuda13') == (0, 'jax[cuda13]==0.11.2')


def test_cpu_machine_keeps_the_cpu_wheel(tmp_path):
  assert _run(tmp_path) == (0, '')
  assert _run(tmp_path, 'echo "No devices were found"; exit 6') == (0, '')  # driver, no GPU


def test_tpu_and_explicit_choice(tmp_path):
  assert _run(tmp_path, TPU_NAME='my-slice') == (0, f'jax[tpu]=={PINNED}')
  assert _run(tmp_path, VAE_ACCELERATOR='cpu', TPU_NAME='x') == (0, '')
  assert _run(tmp_path, VAE_ACCELERATOR='rocm')[0] == 2
  text = (REPO / 'pyproject.toml').read_text()  # its extras name the same pairs
  assert 'cuda13 = ["jax[cuda13]>=0.11.2,<0.12"]' in text and '"jax>=0.10,<0.12"' in text
