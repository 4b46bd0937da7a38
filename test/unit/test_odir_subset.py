"""The ODIR-5K subset shipped in test/data is what its README says: small, real, made by the
committed rule, and clear of every patient the demo model was validated or tested on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from test.odir_data import REPO, SUBSET_DIR, SUBSET_LABELS, subset_rows

SHIPPED_SPLITS = sorted((REPO / "training" / "splits").glob("odir5k_256_*.json"))


def _sides(path: Path) -> dict[str, set[str]]:
    doc = json.loads(path.read_text())
    return {name: set(doc[name]) for name in ("train", "val", "test") if name in doc}


def test_subset_is_small_real_jpegs_with_the_full_sets_columns():
    rows = subset_rows()
    assert 40 <= len(rows) <= 80
    with open(SUBSET_LABELS, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["patient_id", "left_file", "right_file", "has_both", "age", "sex", "N", "D", "G", "C", "A", "H",
                      "M", "O", "left_keywords", "right_keywords"]
    named = {r[col] for r in rows for col in ("left_file", "right_file") if r[col]}
    on_disk = {f"images/{p.name}" for p in (SUBSET_DIR / "images").iterdir()}
    assert named == on_disk  # no image without a row, no row without its images
    for name in sorted(named)[::10]:
        img = cv2.imread(str(SUBSET_DIR / name))
        assert img is not None and img.shape == (256, 256, 3), name
    assert sum(p.stat().st_size for p in SUBSET_DIR.rglob("*") if p.is_file()) < 3_000_000


def test_subset_holds_no_patient_the_demo_model_was_validated_or_tested_on():
    """Two-eyed patients come from the train side of the demo model's split; one-eyed patients
    are in no side of any shipped split (the loader skips them); no demo sample is among them."""
    rows = subset_rows()
    meta = json.loads((REPO / "models" / "demo" / "model.json").read_text())
    demo_split = _sides(REPO / "training" / "splits" / Path(meta["data_summary"]["split_file"]).name)
    in_any_split = set().union(*(ids for path in SHIPPED_SPLITS for ids in _sides(path).values()))
    for r in rows:
        if r["has_both"] == "1":
            assert r["patient_id"] in demo_split["train"], r["patient_id"]
        else:
            assert r["patient_id"] not in in_any_split, r["patient_id"]
    with open(REPO / "demo" / "samples" / "labels.csv", newline="") as f:
        demo_ids = {r["patient_id"] for r in csv.DictReader(f)}
    assert not demo_ids & {r["patient_id"] for r in rows}


@pytest.mark.odir_full
def test_subset_is_a_verbatim_copy_made_by_the_committed_rule(full_odir):
    """Rows and image bytes equal the full set's, and rerunning the rule picks exactly these patients."""
    from test.data.make_odir_subset import DEMO_LABELS, SHIPPED_3WAY_SPLIT, choose_patients

    source_lines = set((full_odir / "labels.csv").read_text().splitlines())
    assert set(SUBSET_LABELS.read_text().splitlines()) <= source_lines
    rows = subset_rows()
    for r in rows:
        for col in ("left_file", "right_file"):
            if r[col]:
                assert (SUBSET_DIR / r[col]).read_bytes() == (full_odir / r[col]).read_bytes(), r[col]
    with open(full_odir / "labels.csv", newline="") as f:
        full_rows = list(csv.DictReader(f))
    with open(DEMO_LABELS, newline="") as f:
        demo_ids = {r["patient_id"] for r in csv.DictReader(f)}
    train_ids = set(json.loads(SHIPPED_3WAY_SPLIT.read_text())["train"])
    assert (sorted(choose_patients(full_rows, train_ids, demo_ids), key=int)
            == sorted((r["patient_id"] for r in rows), key=int))
