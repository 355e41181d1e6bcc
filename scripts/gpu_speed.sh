#!/usr/bin/env bash
# Real-size GPU figures for mixed precision (issue 17, part 2), in one prepared run of <= 8 minutes
# on one H100/H200: random weights of the real sizes, no downloads.
#
#   1. the CUDA-relevant tests, with the device-dependent ones on the GPU (HF_SSL_ROBUST_TEST_DEVICE=cuda);
#   2. bench_attacks.py for ViT-S/14 at 518x518 and ViT-B/16 at 224x224, fp32 vs bf16 vs bf16 +
#      torch.compile, 20 steps: ms per image per attack, ratio to the floor (T x forward+backward
#      w.r.t. pixels), achieved TFLOP/s against the card's bf16 peak, peak memory, the batch
#      `--batch_size auto` picks, and a profile of the ViT-B/16 bf16 attack (what limits it);
#   3. one DeACL step at ViT-B/16 224x224, batch 128, fp32 and bf16.
# Every section has its own time limit and log, so one failure does not lose the rest; the merged
# table is printed at the end and written to OUT_DIR/gpu_table.md.
#
#   scripts/gpu_speed.sh [--out DIR]       # on the GPU machine (default DIR: $OUT, else outputs/gpu_speed)
#   scripts/gpu_speed.sh --dry_run         # the same steps at tiny sizes on CPU (tests/test_gpu_speed.py)
#
# Needs a Python with torch (CUDA build), transformers, accelerate and pytest; the package is
# imported from this checkout (PYTHONPATH). Set PYTHON to choose the interpreter.
set -u
cd "$(dirname "$0")/.."

DRY=0
OUT_DIR="${OUT:-outputs/gpu_speed}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry_run) DRY=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_speed.sh: unknown argument '$1' (use --dry_run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
BENCH=(scripts/bench_attacks.py --sections attacks --no_naive)

if [ "$DRY" = 1 ]; then  # tiny sizes on CPU: every command and option of the real run, in seconds
  TEST_CMD=(ls tests/test_precision.py tests/test_attacks.py)  # the selection exists (collecting it costs a minute here)
  COMMON=(--device cpu --steps 1 --repeats 1 --warmup 0 --compile_backend eager --threads 1)
  SMALL=(--config tiny --image_size 32 --batch_size 2)
  BASE=(--config tiny --image_size 48 --batch_size 2)
  ATTACKS=embed,pgd
  COMPILED=pgd  # compiling on CPU is slow: one attack shows the path works
  DEACL=(--deacl_config tiny --deacl_image_size 32 --deacl_batch_size 2 --deacl_steps 1)
  LIMITS=(60 120 120 120 120 120)
else
  TEST_CMD=(env HF_SSL_ROBUST_TEST_DEVICE=cuda "$PY" -m pytest -q -x -p no:randomly tests/test_precision.py tests/test_attacks.py)
  COMMON=(--device cuda --steps 20 --repeats 2 --warmup 1)
  SMALL=(--config vits14 --image_size 518 --batch_size 32)
  BASE=(--config vitb16 --image_size 224 --batch_size 64)
  ATTACKS=embed,pgd
  COMPILED=embed,pgd
  DEACL=(--deacl_config vitb16 --deacl_image_size 224 --deacl_batch_size 128 --deacl_steps 2)
  LIMITS=(20 80 110 110 75 75)
fi

STATUS=()
section() {  # section NAME LIMIT_S CMD...: run with a time limit, log to OUT_DIR/NAME.log, show its tail
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  STATUS+=("$name: rc=$rc, $((SECONDS - start)) s")
  echo
}

section env "${LIMITS[0]}" bash -c "nvidia-smi 2>/dev/null || echo 'no nvidia-smi'; $PY -c \"import torch, transformers; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else ''); print('transformers', transformers.__version__)\""
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_speed.sh: torch sees no CUDA device; use --dry_run on CPU" >&2
  exit 2
fi
section tests "${LIMITS[1]}" "${TEST_CMD[@]}"
section vits14_518 "${LIMITS[2]}" "$PY" "${BENCH[@]}" "${COMMON[@]}" "${SMALL[@]}" --attacks "$ATTACKS" --amp none,bf16 --report_auto_batch \
  --output "$OUT_DIR/vits14_518.json"
section vitb16_224 "${LIMITS[3]}" "$PY" "${BENCH[@]}" "${COMMON[@]}" "${BASE[@]}" --attacks "$ATTACKS" --amp none,bf16 --report_auto_batch \
  --profile --sections attacks,deacl "${DEACL[@]}" --output "$OUT_DIR/vitb16_224.json"
section vits14_518_compile "${LIMITS[4]}" "$PY" "${BENCH[@]}" "${COMMON[@]}" "${SMALL[@]}" --attacks "$COMPILED" --amp bf16+compile \
  --output "$OUT_DIR/vits14_518_compile.json"
section vitb16_224_compile "${LIMITS[5]}" "$PY" "${BENCH[@]}" "${COMMON[@]}" "${BASE[@]}" --attacks "$COMPILED" --amp bf16+compile \
  --output "$OUT_DIR/vitb16_224_compile.json"

shopt -s nullglob
REPORTS=("$OUT_DIR"/vit*.json)
if [ ${#REPORTS[@]} -gt 0 ]; then
  "$PY" scripts/bench_attacks.py --merge "${REPORTS[@]}" > "$OUT_DIR/gpu_table.md" 2> "$OUT_DIR/merge.log"
  echo "== merged table ($OUT_DIR/gpu_table.md)"
  cat "$OUT_DIR/gpu_table.md"
fi
echo "== sections"
printf '%s\n' "${STATUS[@]}" | tee "$OUT_DIR/status.txt"
! grep -qv "rc=0," "$OUT_DIR/status.txt"
