#!/usr/bin/env bash
# Prints the jax requirement that matches this machine's accelerator, or nothing on a
# CPU-only machine: `make` installs it over the CPU wheel of requirements.txt.
#   NVIDIA GPU, driver for CUDA >= 13   -> the cuda13 line of requirements.txt (jax 0.11.2,
#                                          the pair measured on an H200)
#   NVIDIA GPU, older driver            -> the cuda12 line (CUDA 12 wheels of the CPU pin)
#   Cloud TPU VM (/dev/accel0 or TPU_NAME) -> the tpu line
# VAE_ACCELERATOR=cuda13|cuda12|cuda|tpu|cpu overrides the detection (cuda: by the driver).
set -euo pipefail
requirements="$(dirname "$0")/../requirements.txt"
pinned() {  # the requirement on the line "#   KIND: REQUIREMENT" of requirements.txt
  sed -n "s/^#   $1: *\([^ ]*\).*/\1/p" "$requirements" | head -n 1
}
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
if [ "$kind" = cuda ]; then  # the driver's CUDA version ("CUDA Version: 13.0" in nvidia-smi)
  major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ -n "$major" ] && [ "$major" -ge 13 ]; then kind=cuda13; else kind=cuda12; fi
fi
case "$kind" in
  cuda13|cuda12|tpu) pinned "$kind" ;;
  cpu) ;;
  *) echo "scripts/accelerator.sh: VAE_ACCELERATOR=$kind is not cuda13, cuda12, cuda, tpu or cpu" >&2; exit 2 ;;
esac
