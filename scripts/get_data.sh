#!/usr/bin/env bash
# Obtains the default dataset (Fashion-MNIST) for `make train`:
# 1. IDX files already found (VAE_DATA_DIR, ~/.cache/vae/fashion_mnist, /usr/share/datasets/...);
# 2. else Debian's package dataset-fashion-mnist, where apt-get can be used;
# 3. else TFDS downloads it at training time (needs internet).
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "from vae.data import datasets; import sys; sys.exit(0 if datasets.find_idx_dir('fashion_mnist') else 1)"; then
  echo "Fashion-MNIST IDX files found."
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "Installing Debian's dataset-fashion-mnist ..."
  if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
     { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "Installed under /usr/share/datasets/fashion-mnist."
    exit 0
  fi
fi
echo "No local Fashion-MNIST and no apt: TFDS will download it when training starts (needs internet)."
