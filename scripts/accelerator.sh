#!/usr/bin/env bash
# Prints the jax requirement that matches this machine's accelerator, or nothing on a
# CPU-only machine: `make` installs it over the CPU wheel of requirements.txt.
#   NVIDIA GPU (nvidia-smi lists one)       -> jax[cuda12]==<pinned version>
#   Cloud TPU VM (/dev/accel0 or TPU_NAME)  -> jax[tpu]==<pinned version>
# VAE_ACCELERATOR=cuda|tpu|cpu overrides the detection.
set -euo pipefail
version=$(grep -E '^jax==' "$(dirname "$0")/../requirements.txt" | cut -d= -f3)
kind=${VAE_ACCELERATOR:-}
if [ -z "$kind" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    kind=cuda
  elif [ -e /dev/accel0 ] || [ -n "${TPU_NAME:-}" ]; then
    kind=tpu
  else
    kind=cpu
  fi
fi
case "$kind" in
  cuda) echo "jax[cuda12]==$version" ;;
  tpu) echo "jax[tpu]==$version" ;;
  cpu) ;;
  *) echo "scripts/accelerator.sh: VAE_ACCELERATOR=$kind is not cuda, tpu or cpu" >&2; exit 2 ;;
esac
