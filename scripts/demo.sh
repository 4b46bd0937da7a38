#!/usr/bin/env bash
# The README's demo: set up (idempotent), start the diagnosis node on the demo bundle,
# publish real ODIR eye pairs from demo/samples/, print each DiagnosisResult, stop cleanly.
# The clinician display runs beside the node (127.0.0.1, a free port; its URL is printed) and
# after the exams one headless screenshot per exam is written next to the node log (skipped,
# with a note, when chromium is not installed).
#   bash scripts/demo.sh                  # bundle models/demo
#   bash scripts/demo.sh --bundle DIR     # any bundle written by dms-net-export
#   bash scripts/demo.sh --action         # one exam through the diagnose_exam action: feedback stages + result
#   bash scripts/demo.sh --docs-screenshot  # also write the demo-103 screenshot to docs/display.png (the README's)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUNDLE=models/demo
SKIP_SETUP=0
CLIENT=demo/publish_samples.py
SHOT_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --action) CLIENT=demo/diagnose_exam.py; shift ;;
    --docs-screenshot) SHOT_ARGS=(--docs-png docs/display.png --docs-exam demo-103); shift ;;
    *) echo "usage: bash scripts/demo.sh [--bundle DIR] [--action] [--docs-screenshot] [--skip-setup]" >&2; exit 2 ;;
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
$EXE --ros-args --params-file config/diagnose.yaml -p "bundle:=$BUNDLE" -p publish_attention:=true -r __ns:=/demo >"$LOG" 2>&1 &
NODE_PID=$!
DISPLAY_EXE=install/dms_net_ros/lib/dms_net_ros/display
[ -x "$DISPLAY_EXE" ] || DISPLAY_EXE="python -m dms_net_ros.display.node"
DISPLAY_LOG=${LOG%.log}_display.log
# shellcheck disable=SC2086
$DISPLAY_EXE --ros-args -r __ns:=/demo -p host:=127.0.0.1 -p port:=0 -p image_qos:=reliable >"$DISPLAY_LOG" 2>&1 &
DISPLAY_PID=$!
stop_pid() {
  if kill -0 "$1" 2>/dev/null; then
    kill -INT "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}
stop_node() {
  stop_pid "$DISPLAY_PID"
  stop_pid "$NODE_PID"
}
trap stop_node EXIT
DISPLAY_URL=
for _ in $(seq 300); do
  DISPLAY_URL=$(grep -o 'display at http://[^ ]*' "$DISPLAY_LOG" 2>/dev/null | head -1 | cut -d' ' -f3 || true)
  [ -n "$DISPLAY_URL" ] || ! kill -0 "$DISPLAY_PID" 2>/dev/null && break
  sleep 0.1
done
if [ -n "$DISPLAY_URL" ]; then
  echo "[demo] clinician display: $DISPLAY_URL (log: $DISPLAY_LOG)"
else
  echo "[demo] clinician display did not start (see $DISPLAY_LOG); the demo goes on without it"
fi
set +e
python "$CLIENT" --namespace /demo
rc=$?
set -e
if [ $rc -eq 0 ] && [ -n "$DISPLAY_URL" ]; then
  python demo/screenshot_display.py --url "$DISPLAY_URL" --out-dir "${LOG%.log}_display" "${SHOT_ARGS[@]}" \
    || echo "[demo] display screenshots failed (see above); the demo result stands"
fi
if [ $rc -ne 0 ]; then echo "[demo] failed; last node log lines:" >&2; tail -20 "$LOG" >&2; fi
exit $rc
