"""The shipped demo bundle (models/demo) is what the README's demo runs and what a clinician
first sees: it must load and validate, fit the 40 MB git budget, carry its held-out numbers,
never have trained on the demo's sample patients, and give per-eye findings (the clinician's
"cataract, left eye")."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dms_net_core.bundle import ModelBundle
from dms_net_core.data.splits import read_split

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"
SAMPLES = REPO / "demo" / "samples" / "labels.csv"


def test_demo_bundle_validates_and_fits_the_git_budget():
    bundle = ModelBundle.load(DEMO)  # checks schema, files and their sha256
    total = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert total <= 40_000_000, f"models/demo is {total / 1e6:.1f} MB: the repo budget is 40 MB"
    # per-eye findings (left/right logits) and, since the CAM graft, each eye's class activation maps
    assert bundle.model_config.per_eye_heads
    assert {"left_logits", "right_logits", "cam_left", "cam_right"} <= set(bundle.output_names)


def test_demo_bundle_reports_its_honest_scores():
    """A fixed-split bundle carries its validation and held-out test reports; a cross-validated
    one (every labelled patient trains a member) its out-of-fold score with an interval."""
    meta = json.loads((DEMO / "model.json").read_text())
    metrics = meta["metrics"]
    assert set(metrics["official"]) == {"kappa", "f1", "auc", "final"}
    if "out_of_fold" in metrics:
        oof = metrics["out_of_fold"]
        assert oof["patients"] > 2000 and oof["folds"] == len(meta["ensemble"]["members"])
        lo, hi = oof["score_ci95"]["final"]
        assert lo <= oof["score"]["final"] <= hi
    else:
        test = metrics["held_out_test"]
        for report in (metrics, test):
            assert set(report["official"]) == {"kappa", "f1", "auc", "final"}
            assert report["num_patients"] > 300
    assert len(meta["thresholds"]) == 8


def _member_split_files(meta: dict) -> list[Path]:
    named = [m.get("split_file") for m in (meta.get("ensemble") or {}).get("members", [])]
    if not all(named) or not named:  # bundles from before members recorded their split
        named = [meta["data_summary"]["split_file"]]
    return [REPO / "training" / "splits" / Path(n).name for n in named]


def test_demo_samples_were_never_trained_on():
    meta = json.loads((DEMO / "model.json").read_text())
    with open(SAMPLES, newline="") as f:
        sample_ids = {row["patient_id"] for row in csv.DictReader(f)}
    assert len(sample_ids) == 8
    for split_file in _member_split_files(meta):
        split = read_split(split_file)
        leaked = sample_ids & {str(p) for p in split["train"]}
        assert not leaked, f"demo samples {sorted(leaked)} are in the training side of {split_file.name}"
        assert sample_ids <= {str(p) for p in split["test"]}  # held out from selection too
