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
    assert bundle.model_config.per_eye_heads and bundle.output_names[-2:] == ("left_logits", "right_logits")


def test_demo_bundle_reports_validation_and_held_out_scores():
    meta = json.loads((DEMO / "model.json").read_text())
    val, test = meta["metrics"], meta["metrics"]["held_out_test"]
    for report in (val, test):
        assert set(report["official"]) == {"kappa", "f1", "auc", "final"}
        assert report["num_patients"] > 300
    assert len(meta["thresholds"]) == 8


def test_demo_samples_were_never_trained_on():
    meta = json.loads((DEMO / "model.json").read_text())
    split = read_split(REPO / "training" / "splits" / Path(meta["data_summary"]["split_file"]).name)
    with open(SAMPLES, newline="") as f:
        sample_ids = {row["patient_id"] for row in csv.DictReader(f)}
    assert len(sample_ids) == 8
    leaked = sample_ids & {str(p) for p in split["train"]}
    assert not leaked, f"demo samples {sorted(leaked)} are in the demo model's training side"
    assert sample_ids <= {str(p) for p in split["test"]}  # held out from selection too
