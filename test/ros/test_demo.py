"""scripts/demo.sh end to end (setup skipped: the test run has done it) on the shipped demo bundle."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from test.ros.harness import REPO, require_ros

require_ros()


@pytest.mark.ros
@pytest.mark.slow
def test_demo_script_prints_a_result_per_sample_and_stops_the_node(ros_domain):
    """The README's main job as shipped: the trained demo bundle on the real sample pairs."""
    proc = subprocess.run(
        ["bash", "scripts/demo.sh", "--skip-setup"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "results: OK 8, UNGRADABLE 0, ERROR 0" in out
    with open(REPO / "demo" / "samples" / "labels.csv", newline="") as f:
        patients = [row["patient_id"] for row in csv.DictReader(f)]
    assert len(patients) == 8
    for patient in patients:
        assert f"exam demo-{patient}  status OK" in out
    shipped = json.loads((REPO / "models" / "demo" / "model.json").read_text())["name"]
    assert f"model {shipped}@" in out
    assert out.count("  by eye: ") == 8  # the demo model has per-eye heads: each result says which eye
    assert "truth D" in out and "latency total" in out
    # the node was stopped (no orphan process left holding the domain)
    assert _demo_nodes_running_in(REPO) == []


def _demo_nodes_running_in(checkout) -> list[int]:
    """Pids of demo nodes started from ``checkout`` (demo.sh runs the node there): other
    checkouts on a shared machine run their own demo nodes, which are not this test's orphans."""
    found = subprocess.run(["pgrep", "-f", "bundle:=models/demo"], capture_output=True, text=True).stdout.split()
    ours = []
    for pid in map(int, found):
        try:
            if os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(checkout):
                ours.append(pid)
        except OSError:  # ended meanwhile
            pass
    return ours
