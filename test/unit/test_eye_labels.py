"""The keyword -> class table behind the per-eye labels: documented cases, and the rule
that OR-ing the two eyes reproduces the official patient labels (on the real patients shipped
in the repository; on all 2,479 two-eye patients when ``ODIR_256_DIR`` points at the data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.eye_labels import (
    KEYWORD_CLASS,
    PHOTO_NOTES,
    eye_label_matrices,
    eye_labels,
    keyword_class,
    patient_from_eyes,
    split_keywords,
)

REPO = Path(__file__).resolve().parents[2]


def _codes(vec: np.ndarray) -> str:
    return "".join(c for c, v in zip(CLASS_CODES, vec) if v)


@pytest.mark.parametrize("text, codes, known", [
    ("normal fundus", "N", True),
    ("moderate non proliferative retinopathy，lens dust", "D", True),  # full-width comma, as in the sheet
    ("cataract; pathological myopia", "CM", True),
    ("normal fundus, drusen", "O", True),            # a finding beside "normal" removes N
    ("Suspected  Glaucoma", "G", True),              # case and spacing do not matter
    ("myopic maculopathy", "M", True),
    ("lens dust, low image quality", "", False),      # photograph notes only: no label
    ("", "", False),
    ("some wording never seen before", "O", True),   # unlisted -> ODIR's catch-all, never normal
])
def test_eye_labels_documented_cases(text: str, codes: str, known: bool) -> None:
    labels, is_known = eye_labels(text)
    assert _codes(labels) == codes and is_known is known


def test_table_is_consistent() -> None:
    assert set(KEYWORD_CLASS.values()) <= set(CLASS_CODES) - {"O"}
    assert not set(KEYWORD_CLASS) & PHOTO_NOTES
    assert all(keyword_class(k) is None for k in PHOTO_NOTES)
    assert split_keywords(" a ,b，  c ;") == ["a", "b", "c"]


def test_patient_rule() -> None:
    normal, _ = eye_labels("normal fundus")
    cataract, _ = eye_labels("cataract")
    unknown, _ = eye_labels("lens dust")
    assert _codes(patient_from_eyes(normal, normal)) == "N"
    assert _codes(patient_from_eyes(normal, cataract)) == "C"
    assert _codes(patient_from_eyes(normal, unknown)) == ""  # one eye unreadable: not "both normal"


def _check_reproduces_official(labels_csv: Path) -> int:
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.DictReader(f) if r["left_file"] and r["right_file"]]
    mats = eye_label_matrices((r["left_keywords"], r["right_keywords"]) for r in rows)
    mismatches = []
    for i, r in enumerate(rows):
        official = np.array([int(r[c]) for c in CLASS_CODES], dtype=np.uint8)
        derived = patient_from_eyes(mats["left"][i], mats["right"][i])
        if not np.array_equal(official, derived):
            mismatches.append((r["patient_id"], _codes(official), _codes(derived)))
    assert not mismatches, f"keyword rule disagrees with the official labels: {mismatches[:5]}"
    return len(rows)


def test_rule_reproduces_official_labels_on_shipped_patients() -> None:
    assert _check_reproduces_official(REPO / "demo" / "samples" / "labels.csv") == 8


def test_rule_reproduces_official_labels_on_the_shipped_test_subset() -> None:
    from test.odir_data import SUBSET_LABELS

    assert _check_reproduces_official(SUBSET_LABELS) >= 50


@pytest.mark.odir_full
def test_rule_reproduces_official_labels_on_full_dataset(full_odir: Path) -> None:
    assert _check_reproduces_official(full_odir / "labels.csv") == 2479
