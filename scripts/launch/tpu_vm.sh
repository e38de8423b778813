#!/usr/bin/env bash
# Multi-host training on a Cloud TPU VM slice (e.g. v4-32: 4 hosts x 4 chips).
#
#   TPU_NAME=my-slice ZONE=us-central2-b WORKDIR=/mnt/shared/runs/default \
#     bash scripts/launch/tpu_vm.sh configs/default.py [--config.x=y ...]
#
# Runs the same command on every host of the slice (--worker=all). With
# --distributed, train.py calls jax.distributed.initialize(), which finds the
# coordinator, process count and process id from the TPU metadata itself. The
# mesh then spans all chips of all hosts; train.batch_size is the global batch.
# WORKDIR must be a filesystem every host sees (Filestore/NFS or a gcsfuse
# mount): orbax writes checkpoints collectively from all hosts, and process 0
# alone writes metrics.jsonl, TensorBoard files and images.
# First-time setup on the hosts: git clone the repo, then
#   make venv && .venv/bin/pip install -U "jax[tpu]==0.10.2"
set -euo pipefail
CONFIG=${1:?usage: tpu_vm.sh CONFIG [extra train.py flags]}
shift
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}"
REPO_DIR=${REPO_DIR:-vae}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO_DIR && .venv/bin/python train.py --config $CONFIG --workdir $WORKDIR --distributed $*"
