#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh machine: virtual environment with pinned
# requirements, the PyPI ROS 2 wheels made usable for CMake, and the colcon build of the
# package (message + Python code). Re-running only redoes what changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
V=$ROOT/.venv
PY=${PYTHON:-python3}

for tool in cmake g++ make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "[setup] installing cmake g++ make from Debian packages" >&2
    apt-get update -qq && apt-get install -y -qq cmake g++ make >/dev/null
    break
  fi
done

[ -x "$V/bin/python" ] || "$PY" -m venv "$V"
want=$(cat requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$V/.requirements.sha" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements into .venv (first time: a few minutes)" >&2
  "$V/bin/pip" install -q -U pip
  "$V/bin/pip" install -q -r requirements/all.txt
  "$V/bin/pip" install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat 2>/dev/null
  # The ROS wheels' CMake exports hard-code their build machine's interpreter paths.
  PYINC=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
  SITE=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
  grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$V/share" --include='*.cmake' 2>/dev/null | xargs -r sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages#$SITE#g" || true
  echo "$want" > "$V/.requirements.sha"
fi

# colcon build of the ROS package (message generation + install of launch/config/executable).
src_sha=$(cat CMakeLists.txt package.xml msg/*.msg action/*.action 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -f CMakeLists.txt ] && { [ ! -f install/setup.bash ] || [ "$(cat install/.build.sha 2>/dev/null)" != "$src_sha" ]; }; then
  echo "[setup] colcon build (message generation, ~15 s)" >&2
  (
    export PATH=$V/bin:$PATH CMAKE_PREFIX_PATH=$V AMENT_PREFIX_PATH=$V
    "$V/bin/colcon" --log-base log build --symlink-install \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$V/bin/python" >/tmp/dms_net_colcon.log 2>&1 \
      || { tail -40 /tmp/dms_net_colcon.log >&2; echo "[setup] colcon build failed: see /tmp/dms_net_colcon.log" >&2; exit 1; }
  )
  echo "$src_sha" > install/.build.sha
fi
echo "[setup] ready: source scripts/env.sh" >&2
