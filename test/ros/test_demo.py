"""scripts/demo.sh end to end (setup skipped: the test run has done it) on a tiny bundle."""

from __future__ import annotations

import os
import subprocess

import pytest

from test.ros.harness import REPO, require_ros

require_ros()


@pytest.mark.ros
@pytest.mark.slow
def test_demo_script_prints_a_result_per_sample_and_stops_the_node(tiny_bundle, ros_domain):
    proc = subprocess.run(
        ["bash", "scripts/demo.sh", "--skip-setup", "--bundle", str(tiny_bundle)],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "results: OK 8, UNGRADABLE 0, ERROR 0" in out
    for patient in ("1", "5", "167", "0", "48", "23", "16", "10"):
        assert f"exam demo-{patient}  status OK" in out
    assert "truth D" in out and "latency total" in out
    # the node was stopped (no orphan process left holding the domain)
    leftover = subprocess.run(["pgrep", "-f", f"bundle:={tiny_bundle}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
