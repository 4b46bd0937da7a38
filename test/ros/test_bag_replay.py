"""`dms-net-bag replay` against the live node in another process (real rclpy and DDS):
the node's recorded DiagnosisResults equal `evaluate`'s probabilities for every pair,
and every pair the node did not diagnose is explained by its own ERROR results."""

from __future__ import annotations

import importlib
import json
import random

import numpy as np
import pytest

from dms_net_core.data.odir import load_odir
from dms_net_ros.bag import cli
from dms_net_ros.bag.compare import read_live_recording
from dms_net_ros.bag.make import AcquisitionModel, make_bag
from dms_net_ros.bag.pair_results import read_pairs_csv
from test.fakes.tiny_bundle import tiny_bundle_path
from test.odir_data import SUBSET_DIR

pytestmark = pytest.mark.ros


def _require_ros() -> None:
    try:
        importlib.import_module("rclpy")
        importlib.import_module("dms_net_ros.msg")
    except ImportError as err:
        pytest.skip(f"generated message package not importable ({err}): "
                    "run `bash scripts/setup.sh` and `source scripts/env.sh`")


@pytest.fixture(autouse=True)
def local_dds(monkeypatch):
    _require_ros()
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 101)))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return tiny_bundle_path(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def records():
    return load_odir(SUBSET_DIR / "labels.csv").records[:12]


def _replay(bag, bundle_dir, out, *extra) -> int:
    return cli.main(["replay", "-q", str(bag), "--bundle", str(bundle_dir), "--start-node", "-o", str(out),
                     "--backend", "onnxruntime", "--device", "cpu", *extra])


def test_live_equals_offline_for_every_pair(records, bundle_dir, tmp_path, capsys):
    bag = make_bag(records, tmp_path / "bag").bag
    out = tmp_path / "replay"
    rc = _replay(bag, bundle_dir, out, "--as-fast-as-possible")
    text = capsys.readouterr().out
    assert rc == 0, text + (out / "node.log").read_text()
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["offline_pairs"] == 12 and cmp["live_results"] == 12 and cmp["matched"] == 12
    assert cmp["max_abs_prob_diff"] <= 1e-5 and cmp["missing"] == 0 and cmp["unexplained"] == 0
    assert cmp["exam_id_mismatches"] == 0 and cmp["live_only"] == 0
    live = {(p.left_stamp_ns, p.right_stamp_ns): p for p in read_live_recording(out / "results").results}
    offline = read_pairs_csv(out / "offline" / "pairs.csv")
    for p in offline:
        np.testing.assert_allclose(live[(p.left_stamp_ns, p.right_stamp_ns)].probabilities, p.probabilities,
                                   atol=1e-5, rtol=0)
    live_summary = json.loads((out / "live" / "bag_summary.json").read_text())
    offline_summary = json.loads((out / "offline" / "bag_summary.json").read_text())
    assert live_summary["scored_pairs"] == offline_summary["scored_pairs"] == 12
    for key in ("kappa", "f1", "auc", "final"):
        assert live_summary["report"]["official"][key] == pytest.approx(offline_summary["report"]["official"][key],
                                                                        abs=1e-4)
    assert live_summary["replay"]["node_diagnostics"]["results_ok"] == "12"


def test_missing_pairs_are_explained_by_the_nodes_error_results(records, bundle_dir, tmp_path, capsys):
    """Compressed, sequential, at 20x the recorded rate; the node refuses every image
    (max_pixels below 256x256) and must say so for each pair, so nothing is unexplained."""
    acq = AcquisitionModel(mode="sequential", eye_delay_s=0.3, jitter_s=0.1, period_s=2.0)
    bag = make_bag(records[:4], tmp_path / "bag", compressed=True, storage="sqlite3", acquisition=acq).bag
    out = tmp_path / "replay"
    rc = _replay(bag, bundle_dir, out, "--rate", "20", "--node-param", "max_pixels:=1000")
    text = capsys.readouterr().out
    assert rc == 0, text + (out / "node.log").read_text()
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["offline_pairs"] == 4 and cmp["matched"] == 0 and cmp["missing"] == 4
    assert cmp["explained_by_error_results"] == 4 and cmp["unexplained"] == 0
    assert cmp["live_by_status"]["error"] == 4
    assert all("max_pixels" in r.message for r in read_live_recording(out / "results").results)


def test_no_running_node_is_one_clear_line(records, tmp_path, capsys):
    bag = make_bag(records[:1], tmp_path / "bag").bag
    rc = cli.main(["replay", "-q", str(bag), "--wait-for-node", "1", "-o", str(tmp_path / "replay")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "no diagnosis node found" in err and "/left/image_raw" in err and "--start-node" in err
