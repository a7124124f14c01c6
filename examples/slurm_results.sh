#!/bin/bash
# `make results` on a SLURM cluster: every chapter's heavy results computed into the results store, the
# chapters dealt over the ranks of all nodes (tools/execute_book.py: the costliest first, each to the least
# loaded rank). One torchrun per node, ranks meet at a c10d rendezvous on the first node. The checkout (its
# results/<scale>.new/ folder, where every rank writes) and DANCE_CACHE_DIR must be on a file system every
# node sees. Rank 0 swaps the new store in only when every rank succeeded; after a failure or a kill
# (time limit, preemption) resubmitting the same job keeps the finished entries and computes only the rest.
#
#   sbatch examples/slurm_results.sh          # then commit results/<scale>/
#
#SBATCH --job-name=dance-results
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"                   # the shared checkout
export DANCE_SCALE=${DANCE_SCALE:-paper}
export DANCE_IMAGENET_DIR=${DANCE_IMAGENET_DIR:-/shared/imagenet/val}
export DANCE_IMAGENET_BOXES=${DANCE_IMAGENET_BOXES:-/shared/imagenet/bbox_val}
export DANCE_CACHE_DIR=${DANCE_CACHE_DIR:-$PWD/_build/.results-cache}
export TORCH_HOME=${TORCH_HOME:-/shared/$USER/torch}   # the ImageNet weights, placed there beforehand

HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# One rank per GPU; each rank's chapters see only its own GPU (LOCAL_RANK) and run one at a time.
srun .venv/bin/torchrun --nnodes "$SLURM_NNODES" --nproc-per-node "${SLURM_GPUS_PER_NODE:-8}" \
  --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" \
  tools/execute_book.py --results --jobs 1
