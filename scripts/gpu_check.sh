#!/usr/bin/env bash
# The full pipeline rehearsal on a CUDA machine (<= 8 minutes on one H100): benchmark with head training
# on a 2-cell grid, resume, --heads_dir, --batch_size auto, --worst_case, bf16, DeACL + evolution, a
# 2-process launch when there are 2 GPUs, then a Markdown table of every step (see hf_ssl_robust/rehearsal.py).
#
#   scripts/gpu_check.sh [--out DIR]          # on the GPU machine (default DIR: $OUT, else outputs/rehearsal)
#   scripts/gpu_check.sh --smoke --out DIR    # toy sizes on CPU (tests/test_rehearsal.py)
#
# Speed figures of the attacks and DeACL at real sizes: scripts/gpu_speed.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python3}" -m hf_ssl_robust.rehearsal "$@"
