#!/usr/bin/env bash
# Rebuild the two bundled encoders of the embedded default from scratch, with one command.
#
#   bash scripts/make_embedded_default.sh            # all steps (2 CPU cores: see the cards for the measured times)
#   OUT=/tmp/embedded bash scripts/make_embedded_default.sh
#   PRETRAIN_ARGS="--max_steps 2500 --num_workers 8" bash scripts/make_embedded_default.sh   # on a GPU
#   bash scripts/make_embedded_default.sh            # again in the same OUT: finished steps resume as no-ops
#   SMOKE=1 OUT=/tmp/embedded bash scripts/make_embedded_default.sh   # every step at toy size (minutes; check the
#                                                                     # pipeline on a scratch clone: it rewrites assets/)
#
# 1. self-supervised pretraining of a tiny ResNetModel on pairs of ShapesWorld renders that share their
#    geometry and nothing else (InfoNCE on the pooled token + dense InfoNCE; hf_ssl_robust.pretraining),
#    to the end of its cosine schedule, its frozen probes scored on validation scenes;
# 2. its DeACL twin, made by our own `hf-ssl-robust deacl`;
# 3. both copied into hf_ssl_robust/assets/ with model cards rendered from their run files;
# 4. the default benchmark on both (test scenes, image-free prior rows), whose results go into the cards
#    (copied to model_cards/ too);
# 5. controls: the same benchmark on the random-init encoder, and the same ResNet trained supervised;
# 6. docs/embedded_default/: the results, every step's log (logs/steps.jsonl: git revision, start, seconds),
#    the figures, README's tables.
#
# Each step reads only its own ShapesWorld streams (hf_ssl_robust.data.synthetic.scene_streams): no
# pretraining, probe or head choice sees the benchmark's test scenes.
set -euo pipefail
export HF_HUB_OFFLINE=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}  # progress bars in the logs: a line every 30 s, not every 0.1 s
OUT=${OUT:-outputs/embedded}
STD=shapes-resnet-tiny
TWIN=shapes-resnet-tiny-deacl
# 1200 steps on a 1200-step cosine schedule (the previous bundled run stopped at step 1100 of 2500).
PRETRAIN_ARGS=${PRETRAIN_ARGS:-"--image_size 48 --crop_min 0.3 --batch_size 128 --max_steps 1200 --warmup_steps 50 --lr 2e-3 --probe_every_minutes 5 --probe_scenes 1024 --checkpoint_every 100 --pool_scenes 32768"}
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
LOGS="$OUT/logs"
mkdir -p "$LOGS"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then REVISION="$REVISION+dirty"; fi

# step NAME COMMAND...: run COMMAND, append its output to $LOGS/NAME.log and a line to $LOGS/steps.jsonl
step() {
    local name=$1 started rc
    shift
    started=$(date +%s)
    echo "== $(date -u +%FT%TZ) $REVISION: $*" >>"$LOGS/$name.log"
    set +e
    "$@" 2>&1 | tee -a "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    printf '{"step": "%s", "revision": "%s", "started": "%s", "seconds": %d, "exit": %d}\n' "$name" "$REVISION" \
        "$(date -u -d "@$started" +%FT%TZ)" "$(($(date +%s) - started))" "$rc" >>"$LOGS/steps.jsonl"
    return "$rc"
}

# shellcheck disable=SC2086
step pretraining python -m hf_ssl_robust.pretraining --arch resnet --output_dir "$OUT/$STD" --resume $PRETRAIN_ARGS
# shellcheck disable=SC2086
step deacl hf-ssl-robust deacl --encoder "$OUT/$STD" --dataset shapes --output_dir "$OUT/$TWIN" --resume $DEACL_ARGS
step bundle python scripts/bundle_encoder.py "$OUT/$STD" "$STD"
step bundle python scripts/bundle_encoder.py "$OUT/$TWIN" "$TWIN"
# shellcheck disable=SC2086
step benchmark hf-ssl-robust benchmark --output_dir "$OUT/benchmark" $BENCH_ARGS
for name in "$STD" "$TWIN"; do
    step cards python scripts/bundle_encoder.py "$OUT/$name" "$name" --results "$OUT/benchmark/results.json" --card_copy "model_cards/$name.md"
done
# controls: the random-init encoder through the same benchmark; the same ResNet trained with labels
step random_weights python -m hf_ssl_robust.pretraining --arch resnet --output_dir "$OUT/$STD-random" --max_steps 0 --probe_every_minutes 0 --pool_scenes "$RANDOM_POOL"
# shellcheck disable=SC2086
step random_weights hf-ssl-robust benchmark --encoders "$OUT/$STD-random" --output_dir "$OUT/random-benchmark" $BENCH_ARGS
if [ ! -f "$OUT/supervised_ceiling_resnet.json" ]; then  # a finished ceiling is not redone in the same OUT
    # shellcheck disable=SC2086
    step supervised_ceiling python scripts/supervised_ceiling.py --arch resnet $CEILING_ARGS --output "$OUT/supervised_ceiling_resnet.json"
fi

# the committed evidence README quotes (python scripts/readme_results.py writes README's block)
DOCS=docs/embedded_default
mkdir -p "$DOCS/logs"
cp "$OUT/benchmark/results.json" "$OUT/benchmark/results.md" "$OUT/benchmark/run_info.json" "$DOCS/"
for f in results.json results.md run_info.json; do cp "$OUT/random-benchmark/$f" "$DOCS/random_weights_$f"; done
cp "$OUT/supervised_ceiling_resnet.json" "$DOCS/"
cp "$OUT/$STD/training_log.jsonl" "$DOCS/pretraining_log.jsonl"
cp "$OUT/$STD/training_args.json" "$DOCS/pretraining_args.json"
cp "$OUT/$TWIN/log.jsonl" "$DOCS/deacl_log.jsonl"
step figures python scripts/plot_pretraining.py "$DOCS/pretraining_log.jsonl" --output docs/embedded_default_pretraining.png
step figures python scripts/plot_results.py "$DOCS/results.json" "$DOCS/random_weights_results.json" --output "$DOCS/robustness.png"
step figures python scripts/make_shapes_figure.py --output docs/shapesworld.png
step figures python scripts/make_shapes_figure.py --view_pairs --output docs/view_pairs.png
cp "$LOGS"/*.log "$LOGS/steps.jsonl" "$DOCS/logs/"  # before README's blocks are written from them
step readme python scripts/readme_results.py
