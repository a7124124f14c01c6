#!/bin/bash
# Paper-scale decoys on a SLURM cluster: one torchrun per node, ranks meet at a c10d rendezvous on the
# first node; chunk files and the gathered result go to DANCE_CACHE_DIR, which must be on a file system
# every node sees. Resubmitting the same job after it was killed (time limit, preemption) keeps the
# finished chunks and computes only the rest.
#
#   sbatch examples/slurm_dance.sh            # then run the chapters with the same DANCE_CACHE_DIR
#
#SBATCH --job-name=dance-decoys
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue

set -euo pipefail
export DANCE_SCALE=paper
export DANCE_IMAGENET_DIR=${DANCE_IMAGENET_DIR:-/shared/imagenet/val}
export DANCE_IMAGENET_BOXES=${DANCE_IMAGENET_BOXES:-/shared/imagenet/bbox_val}
export DANCE_CACHE_DIR=${DANCE_CACHE_DIR:-/shared/$USER/dance-cache}
export TORCH_HOME=${TORCH_HOME:-/shared/$USER/torch}   # the ImageNet weights, placed there beforehand

HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node "${SLURM_GPUS_PER_NODE:-8}" \
  --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" \
  -m dance_book shard --model vgg16 ${IMAGES:+--images "$IMAGES"} --chunk 8
# IMAGES unset: the set every chapter shares (PAPER.n_fidelity images); IMAGES=50000: the paper's
# localization scale (then shared_decoys(S, "vgg16", 50000) reads it).
