#!/usr/bin/env bash
# The README's demo: set up (idempotent), start the diagnosis node on the demo bundle,
# publish real ODIR eye pairs from demo/samples/, print each DiagnosisResult, stop cleanly.
#   bash scripts/demo.sh                  # bundle models/demo
#   bash scripts/demo.sh --bundle DIR     # any bundle written by dms-net-export
#   bash scripts/demo.sh --action         # one exam through the diagnose_exam action: feedback stages + result
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUNDLE=models/demo
SKIP_SETUP=0
CLIENT=demo/publish_samples.py
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --action) CLIENT=demo/diagnose_exam.py; shift ;;
    *) echo "usage: bash scripts/demo.sh [--bundle DIR] [--action] [--skip-setup]" >&2; exit 2 ;;
  esac
done
[ "$SKIP_SETUP" = 1 ] || bash scripts/setup.sh
set +u
# shellcheck disable=SC1091
source scripts/env.sh   # LOCALHOST discovery, a random ROS_DOMAIN_ID, the Fast DDS profile
set -u
if [ ! -f "$BUNDLE/model.json" ]; then
  echo "no model bundle at $BUNDLE (model.json missing): train+export one (dms-net-export) or pass --bundle DIR" >&2
  exit 1
fi
EXE=install/dms_net_ros/lib/dms_net_ros/diagnose
[ -x "$EXE" ] || EXE="python -m dms_net_ros.node"
LOG=$(mktemp -t dms_demo_node.XXXXXX.log)
echo "[demo] ROS_DOMAIN_ID=$ROS_DOMAIN_ID; node log: $LOG"
# shellcheck disable=SC2086
$EXE --ros-args --params-file config/diagnose.yaml -p "bundle:=$BUNDLE" -r __ns:=/demo >"$LOG" 2>&1 &
NODE_PID=$!
stop_node() {
  if kill -0 "$NODE_PID" 2>/dev/null; then
    kill -INT "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NODE_PID" 2>/dev/null || true
  fi
  wait "$NODE_PID" 2>/dev/null || true
}
trap stop_node EXIT
set +e
python "$CLIENT" --namespace /demo
rc=$?
set -e
if [ $rc -ne 0 ]; then echo "[demo] failed; last node log lines:" >&2; tail -20 "$LOG" >&2; fi
exit $rc
