"""Issue 14's "done when": the node (live, over DDS), ``dms-net-bag evaluate`` (offline, from a
bag) and ``dms-net-eval`` (offline, from the image files) run one exam pipeline, so the same
eyes get the same probabilities from all three, patient and per eye.

Real ODIR photographs, a real exported model with per-eye heads, ONNX Runtime, a real rosbag2
bag, and the real node process started by ``dms-net-bag replay --start-node``.
"""

from __future__ import annotations

import csv
import importlib
import json
import random

import numpy as np
import pytest

from dms_net_core.bundle_export import export_bundle
from dms_net_core.classes import NUM_CLASSES
from dms_net_core.data.odir import load_odir
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_ros.bag import cli
from dms_net_ros.bag.compare import read_live_recording
from dms_net_ros.bag.make import make_bag
from dms_net_ros.bag.pair_results import read_pairs_csv
from test.odir_data import SUBSET_DIR

pytestmark = pytest.mark.ros
N_PATIENTS = 6
TOLERANCE = 1e-5  # batch 1 (node) vs batches of 8 (bag) vs 4 (eval) on ONNX Runtime's CPU kernels


@pytest.fixture(autouse=True)
def local_dds(monkeypatch):
    try:
        importlib.import_module("rclpy")
        importlib.import_module("dms_net_ros.msg")
    except ImportError as err:
        pytest.skip(f"generated message package not importable ({err}): "
                    "run `bash scripts/setup.sh` and `source scripts/env.sh`")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 101)))


@pytest.fixture(scope="module")
def per_eye_bundle(tmp_path_factory):
    import torch

    torch.manual_seed(3)
    cfg = DMSNetConfig.tiny(per_eye_heads=True)
    out = tmp_path_factory.mktemp("one_pipeline") / "bundle"
    export_bundle(build_model(cfg).eval(), cfg, PreprocessConfig(image_size=cfg.image_size), out,
                  thresholds=np.full(NUM_CLASSES, 0.5, np.float32), name="tiny-per-eye-one-pipeline")
    return out


def test_node_bag_evaluate_and_dms_net_eval_give_identical_probabilities(per_eye_bundle, tmp_path, capsys):
    from training.evaluate import main as dms_net_eval

    records = load_odir(SUBSET_DIR / "labels.csv").records[:N_PATIENTS]
    labels = tmp_path / "labels.csv"  # the same patients as a labels file for dms-net-eval
    with open(SUBSET_DIR / "labels.csv", newline="") as src, open(labels, "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["patient_id"] in {rec.patient_id for rec in records})

    # 1 + 2: the node live and dms-net-bag evaluate on one bag (replay runs evaluate first)
    bag = make_bag(records, tmp_path / "bag").bag
    out = tmp_path / "replay"
    rc = cli.main(["replay", "-q", str(bag), "--bundle", str(per_eye_bundle), "--start-node", "-o", str(out),
                   "--backend", "onnxruntime", "--device", "cpu", "--as-fast-as-possible"])
    text = capsys.readouterr().out
    assert rc == 0, text + (out / "node.log").read_text()
    offline = {p.patient_id: p for p in read_pairs_csv(out / "offline" / "pairs.csv")}
    live = {(p.left_stamp_ns, p.right_stamp_ns): p for p in read_live_recording(out / "results").results}
    assert len(offline) == len(live) == N_PATIENTS

    # 3: dms-net-eval from the image files
    report = dms_net_eval(["--model", str(per_eye_bundle), "--labels", str(labels), "--images-dir", str(SUBSET_DIR),
                              "--output-dir", str(tmp_path / "eval"),
                              "--backend", "onnxruntime", "--device", "cpu", "--batch-size", "4", "--no-plots"])
    assert report["per_eye"]["eyes"] > 0
    eval_probs = np.load(tmp_path / "eval" / "probs.npy")
    eval_eyes = np.load(tmp_path / "eval" / "eye_probs.npz")
    eval_ids = [r.patient_id for r in load_odir(labels, SUBSET_DIR).records]  # dms-net-eval's row order
    assert sorted(eval_ids) == sorted(offline)

    for k, pid in enumerate(eval_ids):
        bag_row = offline[pid]
        node_row = live[(bag_row.left_stamp_ns, bag_row.right_stamp_ns)]
        assert bag_row.status == node_row.status == "ok", (pid, bag_row.message, node_row.message)
        for name, node_p, bag_p, eval_p in (
            ("patient", node_row.probabilities, bag_row.probabilities, eval_probs[k]),
            ("left eye", node_row.left_probabilities, bag_row.left_probabilities, eval_eyes["probs_left"][k]),
            ("right eye", node_row.right_probabilities, bag_row.right_probabilities, eval_eyes["probs_right"][k]),
        ):
            assert node_p is not None and bag_p is not None, (pid, name)
            np.testing.assert_allclose(node_p, bag_p, atol=TOLERANCE, rtol=0, err_msg=f"{pid} {name}: node vs bag")
            np.testing.assert_allclose(bag_p, eval_p, atol=TOLERANCE, rtol=0,
                                       err_msg=f"{pid} {name}: bag vs dms-net-eval")
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["matched"] == N_PATIENTS and cmp["unexplained"] == 0
