#!/usr/bin/env bash
# Rebuild the two bundled encoders of the embedded default from scratch, with one command.
#
#   bash scripts/make_embedded_default.sh            # all steps (2 CPU cores: see the cards for the measured times)
#   OUT=/tmp/embedded bash scripts/make_embedded_default.sh
#   PRETRAIN_ARGS="--max_steps 2500 --num_workers 8" bash scripts/make_embedded_default.sh   # on a GPU
#   SMOKE=1 OUT=/tmp/embedded bash scripts/make_embedded_default.sh   # every step at toy size (minutes; check the
#                                                                     # pipeline on a scratch clone: it rewrites assets/)
#
# 1. self-supervised pretraining of a tiny ResNetModel on pairs of ShapesWorld renders that share their
#    geometry and nothing else (InfoNCE on the pooled token + dense InfoNCE; scripts/pretrain_tiny.py);
# 2. its DeACL twin, made by our own `hf-ssl-robust deacl`;
# 3. both copied into hf_ssl_robust/assets/ with model cards rendered from their run files;
# 4. the default benchmark on both, whose results go into the cards (copied to model_cards/ too).
set -euo pipefail
export HF_HUB_OFFLINE=1
OUT=${OUT:-outputs/embedded}
STD=shapes-resnet-tiny
TWIN=shapes-resnet-tiny-deacl
# The bundled run: 1100 steps of a 2500-step schedule (stopped there for time; 31 min on 2 CPU cores).
PRETRAIN_ARGS=${PRETRAIN_ARGS:-"--image_size 48 --crop_min 0.3 --batch_size 128 --max_steps 2500 --stop_after_steps 1100 --warmup_steps 50 --lr 2e-3 --probe_every_minutes 5 --probe_scenes 1024 --checkpoint_every 100 --pool_scenes 32768"}
DEACL_ARGS=${DEACL_ARGS:-"--eps 8/255 --objective dense --max_steps 200 --batch_size 64 --num_train_samples 4096 --checkpoint_every 50"}
BENCH_ARGS=${BENCH_ARGS:-}
CEILING_ARGS=${CEILING_ARGS:-"--steps 1200 --lr 2e-3 --eval_every 200"}
RANDOM_POOL=${RANDOM_POOL:-1024}
if [ "${SMOKE:-0}" = 1 ]; then
    PRETRAIN_ARGS="--image_size 48 --batch_size 16 --max_steps 4 --warmup_steps 1 --probe_every_minutes 60 --probe_scenes 32 --checkpoint_every 2 --pool_scenes 64"
    DEACL_ARGS="--eps 8/255 --objective dense --max_steps 2 --batch_size 8 --num_train_samples 32 --attack_steps 2"
    BENCH_ARGS="--max_eval_samples 8 --num_train_samples 32 --head_epochs 1 --steps 2"
    CEILING_ARGS="--steps 4 --eval_every 2 --batch_size 8 --num_eval 32"
    RANDOM_POOL=64
fi

# shellcheck disable=SC2086
python scripts/pretrain_tiny.py --arch resnet --output_dir "$OUT/$STD" --resume $PRETRAIN_ARGS
# shellcheck disable=SC2086
hf-ssl-robust deacl --encoder "$OUT/$STD" --dataset shapes --output_dir "$OUT/$TWIN" --resume $DEACL_ARGS
python scripts/bundle_encoder.py "$OUT/$STD" "$STD"
python scripts/bundle_encoder.py "$OUT/$TWIN" "$TWIN"
# shellcheck disable=SC2086
hf-ssl-robust benchmark --output_dir "$OUT/benchmark" $BENCH_ARGS
for name in "$STD" "$TWIN"; do
    python scripts/bundle_encoder.py "$OUT/$name" "$name" --results "$OUT/benchmark/results.json" --card_copy "model_cards/$name.md"
done
# the committed evidence README quotes: tables (python scripts/readme_results.py writes README's block from
# results.json + run_info.json), pretraining curve, random-weights control, supervised ceiling
DOCS=docs/embedded_default
mkdir -p "$DOCS"
cp "$OUT/benchmark/results.json" "$OUT/benchmark/results.md" "$OUT/benchmark/run_info.json" "$OUT/benchmark/robustness_curves.png" "$DOCS/"
python scripts/readme_results.py
cp "$OUT/$STD/training_log.jsonl" "$DOCS/pretraining_log.jsonl"
python scripts/plot_pretraining.py "$DOCS/pretraining_log.jsonl" --output docs/embedded_default_pretraining.png
python scripts/pretrain_tiny.py --arch resnet --output_dir "$OUT/$STD-random" --max_steps 0 --probe_every_minutes 0 --pool_scenes "$RANDOM_POOL"
# shellcheck disable=SC2086
hf-ssl-robust benchmark --encoders "$OUT/$STD-random" --attacks embed --output_dir "$OUT/random-benchmark" $BENCH_ARGS
cp "$OUT/random-benchmark/results.md" "$DOCS/random_weights_results.md"
cp "$OUT/random-benchmark/results.json" "$DOCS/random_weights_results.json"
# shellcheck disable=SC2086
python scripts/supervised_ceiling.py --arch resnet $CEILING_ARGS --output "$DOCS/supervised_ceiling_resnet.json"
