#!/usr/bin/env bash
# The CPU training plans of issue 22 (RESULTS 1h/1i), resumable: run it again after an
# interruption and every finished run is skipped, an unfinished one continues from its last.pt.
#   PLAN=speed bash scripts/cpu_train_plan.sh   # the feature-bank recipe on the fixed 3-way split, seeds 0-2
#   PLAN=cv    bash scripts/cpu_train_plan.sh   # 5-fold cross-validation over every labelled patient
#   PLAN=nested bash scripts/cpu_train_plan.sh  # the same 5-fold recipe with the fixed split's 364 test
#                                               # patients held out of every fold: scores the CV ensemble
#                                               # on patients no member saw, paired with models/demo
# Env: RUNS (default runs/cpu), BANK (runs/bank/lite0_256_s4_v8), ODIR_256_DIR (the data),
#      SEEDS (speed plan), FOLDS (cv plan), EXTRA (more dms-net-train flags, e.g. a lever).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
DATA=${ODIR_256_DIR:-$ROOT/../shared/data/odir5k_256}
RUNS=${RUNS:-runs/cpu}
BANK=${BANK:-runs/bank/lite0_256_s4_v8}
PLAN=${PLAN:-speed}
EXTRA=${EXTRA:-}
# the fast recipe: the shipped per-eye Lite0 recipe (RESULTS 1b) from a feature bank of 8 views
# at stage 4, stages 0-4 frozen, bf16 autocast on the CPU
RECIPE=(--config plain_binocular_per_eye_lite0 --labels "$DATA/labels.csv"
        --preprocess 'mean=[0.5,0.5,0.5]' --preprocess 'std=[0.5,0.5,0.5]' --epochs 16
        --frozen-stages 5 --feature-bank "$BANK" --bank-stage 4 --bank-views 8 --amp-dtype bf16
        --device cpu --no-progress --no-tensorboard)

run() {  # run NAME ARGS...: skip when finished, resume when interrupted
  local name=$1; shift
  local out=$RUNS/$name
  if [ -f "$out/result.json" ]; then echo "[plan] $name: done"; return; fi
  local resume=()
  [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
  mkdir -p "$out"
  echo "[plan] $name: $(date -u +%H:%M:%S) start ${resume[*]}"
  # shellcheck disable=SC2086
  dms-net-train "${RECIPE[@]}" "$@" $EXTRA --output-dir "$out" "${resume[@]}" >>"$out/train.log" 2>&1
  echo "[plan] $name: $(date -u +%H:%M:%S) $(tail -2 "$out/train.log" | tr '\n' ' ')"
}

case "$PLAN" in
  speed)
    for s in ${SEEDS:-0 1 2}; do
      run "bank_f5_s$s" --split-file training/splits/odir5k_256_val15_test15_seed0.json --no-one-eye-patients --seed "$s"
    done ;;
  cv)
    for k in ${FOLDS:-0 1 2 3 4}; do
      run "cv5_f5_fold$k" --split-file "training/splits/odir5k_256_cv5_seed0_fold$k.json" --seed "$k" \
        --epoch-snapshots --early-stop-patience 0
    done ;;
  nested)
    for k in ${FOLDS:-0 1 2 3 4}; do
      run "nested_cv5_f5_fold$k" --split-file "training/splits/odir5k_256_nested_cv5_seed0_fold$k.json" --seed "$k" \
        --epoch-snapshots --early-stop-patience 0
    done ;;
  *) echo "PLAN must be speed, cv or nested, got $PLAN" >&2; exit 2 ;;
esac
