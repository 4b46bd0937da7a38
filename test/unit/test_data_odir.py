"""Both ODIR label layouts parse to the same records; bad rows fail naming file and row;
the stratified split keeps class proportions and the shipped split is reproducible.

Real rows and images come from the subset shipped in test/data (its splits are reproducible
too); the exact counts of the full 2,762-patient set and the shipped splits' reproducibility
from it are opt-in tests (``odir_full``, ODIR_256_DIR)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.odir import OdirFormatError, labels_matrix, load_odir, select_patients
from dms_net_core.data.splits import read_split, stratified_split, write_split
from test.odir_data import SUBSET_DIR as DATA, SUBSET_LABELS as LABELS, SUBSET_SPLIT, SUBSET_SPLIT3, subset_rows

SHIPPED_SPLIT = Path(__file__).resolve().parents[2] / "training" / "splits" / "odir5k_256_val15_seed0.json"
SHIPPED_3WAY_SPLIT = SHIPPED_SPLIT.with_name("odir5k_256_val15_test15_seed0.json")

OFFICIAL_HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus",
                   "Left-Diagnostic Keywords", "Right-Diagnostic Keywords", *CLASS_CODES]


def _shared_rows(n: int = 6) -> list[dict[str, str]]:
    with open(LABELS, newline="") as f:
        rows = list(csv.DictReader(f))
    both = [r for r in rows if r["has_both"] == "1"][: n - 1]
    one_eye = [r for r in rows if r["has_both"] != "1"][:1]
    return both + one_eye


def _official_rows(shared: list[dict[str, str]]) -> list[list[str]]:
    out = []
    for r in shared:
        out.append([r["patient_id"], r["age"], r["sex"], os.path.basename(r["left_file"]) if r["left_file"] else "",
                     os.path.basename(r["right_file"]) if r["right_file"] else "", r["left_keywords"],
                     r["right_keywords"], *[r[c] for c in CLASS_CODES]])
    return out


def _write_official_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(OFFICIAL_HEADER)
        w.writerows(rows)


def _write_shared_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_shared_labels_parse_and_count_on_the_subset():
    """The loader agrees with a plain csv read of the subset: pairs, one-eyed patients, labels, keywords."""
    rows = subset_rows()
    res = load_odir(LABELS)
    assert res.layout == "shared"
    assert (len(res.records), len(res.skipped_missing_eye)) == (55, 4)
    assert [r.patient_id for r in res.records] == [r["patient_id"] for r in rows if r["left_file"] and r["right_file"]]
    assert res.skipped_missing_eye == [r["patient_id"] for r in rows if not (r["left_file"] and r["right_file"])]
    everyone = load_odir(LABELS, skip_missing_eye=False)
    expected = {c: sum(int(r[c]) for r in rows) for c in CLASS_CODES}
    assert dict(zip(CLASS_CODES, labels_matrix(everyone.records).sum(0).tolist())) == expected
    assert min(expected.values()) >= 5  # every class, for the stratified splits and the CutMix groups
    one_eyed = [r for r in everyone.records if not r.has_both]
    assert len(one_eyed) == 4 and all(bool(r.left_path) != bool(r.right_path) for r in one_eyed)
    assert [r.keywords for r in everyone.records] == [{"left": r["left_keywords"], "right": r["right_keywords"]}
                                                      for r in rows]
    notes = " ".join(f"{r.keywords['left']},{r.keywords['right']}" for r in everyone.records)
    assert "lens dust" in notes and "low image quality" in notes
    assert all(Path(r.left_path).is_file() and Path(r.right_path).is_file() for r in res.records)


@pytest.mark.odir_full
def test_shared_labels_parse_and_count(full_odir):
    res = load_odir(full_odir / "labels.csv")
    assert res.layout == "shared"
    assert len(res.records) == 2479 and len(res.skipped_missing_eye) == 2762 - 2479
    everyone = load_odir(full_odir / "labels.csv", skip_missing_eye=False)
    assert len(everyone.records) == 2762
    assert dict(zip(CLASS_CODES, labels_matrix(everyone.records).sum(0).tolist())) == {
        "N": 875, "D": 927, "G": 151, "C": 162, "A": 129, "H": 83, "M": 142, "O": 757}
    r = res.records[0]
    assert r.labels.dtype == np.uint8 and r.labels.shape == (8,)
    assert Path(r.left_path).is_file() and Path(r.right_path).is_file()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_official_layout_parses_to_same_records(tmp_path, fmt):
    shared = _shared_rows()
    _write_shared_csv(tmp_path / "labels.csv", shared)
    (tmp_path / "images").symlink_to(DATA / "images")
    rows = _official_rows(shared)
    if fmt == "csv":
        sheet = tmp_path / "official.csv"
        _write_official_csv(sheet, rows)
    else:
        openpyxl = pytest.importorskip("openpyxl")
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(OFFICIAL_HEADER)
        for row in rows:  # the real sheet stores ids, ages and labels as numbers
            ws.append([int(row[0]), int(row[1]), *row[2:7], *[int(v) for v in row[7:]]])
        sheet = tmp_path / "official.xlsx"
        wb.save(sheet)
    a = load_odir(tmp_path / "labels.csv")
    b = load_odir(sheet, images_dir=DATA / "images")
    assert b.layout == "official"
    assert [r.patient_id for r in a.records] == [r.patient_id for r in b.records]
    np.testing.assert_array_equal(labels_matrix(a.records), labels_matrix(b.records))
    assert [os.path.realpath(r.left_path) for r in a.records] == [os.path.realpath(r.left_path) for r in b.records]
    assert [(r.age, r.sex, r.keywords) for r in a.records] == [(r.age, r.sex, r.keywords) for r in b.records]
    assert a.skipped_missing_eye == b.skipped_missing_eye and len(a.skipped_missing_eye) == 1


def test_bad_rows_name_file_and_row(tmp_path):
    rows = _official_rows(_shared_rows(4))
    bad_label = [list(r) for r in rows]
    bad_label[2][7 + 3] = "2"
    _write_official_csv(tmp_path / "bad_label.csv", bad_label)
    with pytest.raises(OdirFormatError, match=r"bad_label.csv row 4: label column C is '2'"):
        load_odir(tmp_path / "bad_label.csv", images_dir=DATA / "images")

    missing_img = [list(r) for r in rows]
    missing_img[1][3] = "no_such_file.jpg"
    _write_official_csv(tmp_path / "missing.csv", missing_img)
    with pytest.raises(OdirFormatError, match=r"missing.csv row 3: image file .*no_such_file.jpg does not exist"):
        load_odir(tmp_path / "missing.csv", images_dir=DATA / "images")

    dup = [list(r) for r in rows] + [list(rows[0])]
    _write_official_csv(tmp_path / "dup.csv", dup)
    with pytest.raises(OdirFormatError, match="row 6: duplicate patient id"):
        load_odir(tmp_path / "dup.csv", images_dir=DATA / "images")

    (tmp_path / "nocols.csv").write_text("ID,Left-Fundus\n1,a.jpg\n")
    with pytest.raises(OdirFormatError, match="unrecognised label layout: missing columns"):
        load_odir(tmp_path / "nocols.csv")

    with pytest.raises(OdirFormatError, match="does not exist"):
        load_odir(tmp_path / "absent.csv")


def test_select_patients_rejects_foreign_split():
    recs = load_odir(LABELS).records
    first, second = recs[0].patient_id, recs[1].patient_id
    assert [r.patient_id for r in select_patients(recs, [second, first])] == [second, first]
    with pytest.raises(OdirFormatError, match="not in the label file"):
        select_patients(recs, [first, "nobody"])
    with pytest.raises(OdirFormatError, match="not in the label file"):  # the shipped splits name the full set
        select_patients(recs, read_split(SHIPPED_SPLIT)["val"])


@pytest.mark.parametrize("path,val,test", [(SUBSET_SPLIT, 0.25, 0.0), (SUBSET_SPLIT3, 0.25, 0.25)])
def test_subset_splits_are_reproducible_and_patient_disjoint(path, val, test):
    """The subset's shipped splits are what stratified_split makes of it (seed 0), by patient,
    with every class on the training side."""
    recs = load_odir(LABELS).records
    split = stratified_split(recs, val, seed=0, test_fraction=test)
    assert read_split(path) == split
    sides = [set(ids) for ids in split.values()]
    assert sum(map(len, sides)) == len(set().union(*sides)) == len(recs)
    assert labels_matrix(select_patients(recs, split["train"])).sum(0).min() >= 3


@pytest.mark.odir_full
def test_split_keeps_class_proportions_and_shipped_split_is_reproducible(tmp_path, full_odir):
    labels = full_odir / "labels.csv"
    recs = load_odir(labels).records
    split = stratified_split(recs, 0.15, seed=0)
    assert not set(split["train"]) & set(split["val"])
    assert len(split["train"]) + len(split["val"]) == len(recs)
    assert abs(len(split["val"]) / len(recs) - 0.15) < 0.005
    y_all = labels_matrix(recs).mean(0)
    y_val = labels_matrix(select_patients(recs, split["val"])).mean(0)
    # tolerance: each class's val prevalence within 1 percentage point and 20 % relative
    assert np.all(np.abs(y_val - y_all) < 0.01), (y_val, y_all)
    assert np.all(np.abs(y_val - y_all) / y_all < 0.2), (y_val, y_all)
    shipped = read_split(SHIPPED_SPLIT)
    assert shipped == split
    write_split(tmp_path / "s.json", split, recs, seed=0, val_fraction=0.15, source=str(labels))
    assert read_split(tmp_path / "s.json") == split
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["val"]["num_patients"] == len(split["val"])


@pytest.mark.odir_full
def test_three_way_split_holds_out_test_patients_with_class_proportions(tmp_path, full_odir):
    labels = full_odir / "labels.csv"
    recs = load_odir(labels).records
    split = stratified_split(recs, 0.15, seed=0, test_fraction=0.15)
    sides = [set(split[k]) for k in ("train", "val", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(map(len, sides)) == len(recs)
    y_all = labels_matrix(recs).mean(0)
    for name in ("val", "test"):
        assert abs(len(split[name]) / len(recs) - 0.15) < 0.005, name
        y = labels_matrix(select_patients(recs, split[name])).mean(0)
        assert np.all(np.abs(y - y_all) < 0.01), (name, y, y_all)
    assert read_split(SHIPPED_3WAY_SPLIT) == split  # the shipped 3-way split is reproducible
    write_split(tmp_path / "s3.json", split, recs, seed=0, val_fraction=0.15, source=str(labels), test_fraction=0.15)
    doc = json.loads((tmp_path / "s3.json").read_text())
    assert doc["test_fraction"] == 0.15 and doc["summary"]["test"]["num_patients"] == len(split["test"])


def test_read_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_split(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_split(tmp_path / "bad.json")
    (tmp_path / "overlap.json").write_text(json.dumps({"train": ["1", "2"], "val": ["2"]}))
    with pytest.raises(ValueError, match="in both train and val"):
        read_split(tmp_path / "overlap.json")
    (tmp_path / "leak.json").write_text(json.dumps({"train": ["1"], "val": ["2"], "test": ["1"]}))
    with pytest.raises(ValueError, match="in both train and test"):
        read_split(tmp_path / "leak.json")
