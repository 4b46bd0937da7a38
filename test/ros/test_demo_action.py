"""scripts/demo.sh --action end to end (setup skipped: the test run has done it) on the shipped demo bundle."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from test.ros.harness import REPO, require_ros

require_ros()


@pytest.mark.ros
@pytest.mark.slow
def test_demo_action_mode_prints_each_feedback_stage_and_the_result(ros_domain):
    proc = subprocess.run(
        ["bash", "scripts/demo.sh", "--skip-setup", "--action"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "sending DiagnoseExam goal: exam demo-951, images from the camera topics" in out
    stages = [line.split(" s  ", 1)[1].split("  eyes arrived")[0].strip() for line in out.splitlines()
              if line.startswith("  feedback ")]
    assert stages == ["waiting for both eyes", "waiting for right eye", "queued for inference", "grading",
                      "inferring"], out
    assert "result: OK (goal SUCCEEDED): " in out
    shipped = json.loads((REPO / "models" / "demo" / "model.json").read_text())["name"]
    assert "exam demo-951  status OK" in out and f"model {shipped}@" in out
    assert "  by eye: " in out  # the shipped model's per-eye finding reaches the action's result
