#!/usr/bin/env bash
# Rebuild the two bundled encoders of the embedded default from scratch (2 CPU cores: ~45 min).
#
#   bash scripts/make_embedded_default.sh            # all steps
#   OUT=/tmp/embedded bash scripts/make_embedded_default.sh
#
# 1. DINO + iBOT self-distillation of a tiny Dinov2 on ShapesWorld (scripts/pretrain_tiny.py);
# 2. its DeACL twin, made by our own `hf-ssl-robust deacl`;
# 3. both copied into hf_ssl_robust/assets/ with model cards rendered from their run files;
# 4. the default benchmark on both, whose results go into the cards (copied to model_cards/ too).
set -euo pipefail
export HF_HUB_OFFLINE=1
OUT=${OUT:-outputs/embedded}
PRETRAIN_ARGS=${PRETRAIN_ARGS:-"--max_steps 1500 --max_minutes 40"}
DEACL_ARGS=${DEACL_ARGS:-"--max_steps 300 --batch_size 64 --num_train_samples 4000 --checkpoint_every 100"}

# shellcheck disable=SC2086
python scripts/pretrain_tiny.py --output_dir "$OUT/shapes-vit-tiny" $PRETRAIN_ARGS
# shellcheck disable=SC2086
hf-ssl-robust deacl --encoder "$OUT/shapes-vit-tiny" --dataset shapes --output_dir "$OUT/shapes-vit-tiny-deacl" $DEACL_ARGS
python scripts/bundle_encoder.py "$OUT/shapes-vit-tiny" shapes-vit-tiny
python scripts/bundle_encoder.py "$OUT/shapes-vit-tiny-deacl" shapes-vit-tiny-deacl
hf-ssl-robust benchmark --output_dir "$OUT/benchmark"
for name in shapes-vit-tiny shapes-vit-tiny-deacl; do
    python scripts/bundle_encoder.py "$OUT/$name" "$name" --results "$OUT/benchmark/results.json" --card_copy "model_cards/$name.md"
done
# README's tables come from these committed files (python scripts/readme_results.py; tests/test_readme.py checks them)
mkdir -p docs/embedded_default
cp "$OUT/benchmark/results.json" "$OUT/benchmark/run_info.json" docs/embedded_default/
python scripts/readme_results.py
