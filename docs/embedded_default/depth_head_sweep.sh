#!/bin/bash
# The depth-head sweep behind the ShapesWorld preset (docs/embedded_default/depth_head_sweep.json); prints one line per setting.
mkdir -p "${SWEEP:-outputs/depth_sweep}"
# depth-head sweep on the training split's hold-out (validation), new standard encoder
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
for cfg in "10 1e-2" "20 1e-2" "20 3e-3" "30 1e-2"; do
  set -- $cfg
  out=${SWEEP:-outputs/depth_sweep}/e$1_lr$2
  nice -n 5 hf-ssl-robust train-head --task depth --dataset shapes --encoder ${OUT:-outputs/embedded}/shapes-resnet-tiny \
     --epochs $1 --lr $2 --output_dir $out > $out.log 2>&1
  echo "$cfg $(python -c "import json;m=json.load(open('$out/train_metrics.json'));print({k:v for k,v in m.items() if 'val' in k or k in ('best_epoch',)})")"
done
