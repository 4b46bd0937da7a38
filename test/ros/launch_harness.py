"""`ros2 launch` and `ros2 lifecycle` as real processes, the way an integrator runs them.

The launch packages (launch, launch_ros, the ros2 CLI) are a test-only dependency that
``scripts/setup.sh`` installs from ``../shared/ros2-launch`` when that folder exists; where
they are missing, `ros2_launch_unavailable` says why and the real launch tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGE, LAUNCH_FILE = "dms_net_ros", "diagnose.launch.py"
_STARTED = re.compile(r"\[INFO\] \[[\w-]+\]: process started with pid \[(\d+)\]")


def ros2_launch_unavailable() -> str | None:
    """Why `ros2 launch dms_net_ros diagnose.launch.py` cannot run here, or None when it can."""
    why = None
    try:
        import launch_ros.actions  # noqa: F401 - imports composition_interfaces, built by setup
        import ros2launch  # noqa: F401
    except ImportError as exc:
        why = f"{exc}"
    if why is None and shutil.which("ros2") is None:
        why = "no ros2 executable on PATH"
    if why is None:
        return None
    return (
        f"ros2 launch unavailable ({why}): launch, launch_ros and the ros2 CLI are a test-only dependency "
        "that scripts/setup.sh installs from ../shared/ros2-launch when that folder exists"
    )


def _env() -> dict[str, str]:
    # The caller's fixtures set ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST" and os.environ.get("ROS_DOMAIN_ID")
    return dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")


class LaunchProcess:
    """``ros2 launch dms_net_ros diagnose.launch.py <args>`` in its own process group.

    A terminal's Ctrl-C sends SIGINT to every process of the foreground group (``ros2 launch``
    and the node it started); `interrupt` does the same with `os.killpg`. Always `stop()` it.
    """

    def __init__(self, args: list[str], log_path: Path, cwd: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["ros2", "launch", PACKAGE, LAUNCH_FILE, *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, env=_env(), start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def node_pids(self) -> list[int]:
        return [int(m) for m in _STARTED.findall(self.log_text())]

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the launch output:\n{self.log_text()[-3000:]}")

    def group_processes(self) -> list[int]:
        """Live processes of the launch's process group: the launch, its nodes, anything they left."""
        return _live_group_members(self.proc.pid)

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C: SIGINT to the whole process group; returns the launch's exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Ctrl-C if still running, then SIGKILL whatever is left (test clean-up only)."""
        try:
            if self.proc.poll() is None:
                try:
                    self.interrupt()
                except subprocess.TimeoutExpired:
                    pass
            if self.group_processes():
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait(5)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (exited, not yet reaped), from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def ros2_lifecycle(verb: str, node: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``ros2 lifecycle <verb> <node> <args> --no-daemon`` (a daemon would outlive the test).

    Without the daemon each command discovers the graph afresh for ``--spin-time``; a node not
    yet discovered in that time ("Node not found") is asked again until ``timeout``.
    """
    end = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            ["ros2", "lifecycle", verb, node, *args, "--no-daemon", "--spin-time", "1.5"],
            check=False, capture_output=True, text=True, timeout=timeout, env=_env(),
        )
        if "Node not found" not in done.stderr or time.monotonic() > end:
            return done


#: The launch commands the README's robot section shows; the real launch test runs exactly these.
README_COMMANDS = (
    "ros2 launch dms_net_ros diagnose.launch.py",
    (
        "ros2 launch dms_net_ros diagnose.launch.py namespace:=exam_room "
        "left_topic:=/fundus/left/image_raw right_topic:=/fundus/right/image_raw qos:=reliable"
    ),
)
