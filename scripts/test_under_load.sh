#!/usr/bin/env bash
# The ROS tests on a busy machine (issue 25 item 2): LOAD busy-loop processes (default: one
# per core) run at normal priority beside the suite for its whole run, so a test that relies on
# a fixed sleep or a tight timeout shows up as a failure here before it shows up in CI.
#   bash scripts/test_under_load.sh                 # test/ros under full load
#   LOAD=1 bash scripts/test_under_load.sh test/ros/test_node_e2e.py -x
#   ROUNDS=3 bash scripts/test_under_load.sh        # repeat: flakiness is a rate
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOAD=${LOAD:-$(nproc)}
ROUNDS=${ROUNDS:-1}
pids=()
cleanup() { [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$LOAD"); do
  python3 -c 'while True: pass' &
  pids+=("$!")
done
echo "[test_under_load] $LOAD busy-loop process(es) on $(nproc) core(s); $ROUNDS round(s)" >&2
[ "$#" -gt 0 ] || set -- test/ros
status=0
for round in $(seq "$ROUNDS"); do
  echo "[test_under_load] round $round" >&2
  bash scripts/test.sh -q "$@" || status=1
done
exit "$status"
