"""Per-eye labels from ODIR-5K's diagnostic keywords (torch-free).

ODIR-5K's official labels are per patient, but the sheet also carries each eye's diagnostic
keywords ("moderate non proliferative retinopathy, lens dust"). Mapping every keyword to
one of the eight classes gives a label per eye, which

- trains the per-eye heads (`DMSNetConfig.per_eye_heads`), so a result can say which eye
  carries a finding ("cataract, left eye"), and
- scores those heads (per-eye AUC in `dms-net-eval` and `dms-net-bag evaluate`).

The table below lists every keyword of the 2,762-patient development set. Keywords that
describe the *photograph* rather than the eye ("lens dust", "low image quality", "no fundus
image", ...) map to no class. A keyword not in the table maps to O ("other diseases /
abnormalities" is ODIR's catch-all), so an unseen wording never silently turns an abnormal
eye normal. OR-ing the two eyes' labels, with N only when both eyes are normal and no
disease is present, reproduces the official patient labels for all 2,479 two-eye patients
of the development set (`test_eye_labels.py` checks the rule on the images shipped in the
repository, and on the whole set when ``ODIR_256_DIR`` is given).

An eye whose keywords give no class at all (only photograph notes, or no keywords) has an
*unknown* label: `eye_labels` reports it so the trainer masks that eye's loss instead of
teaching "no finding".
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from dms_net_core.classes import CLASS_CODES, NORMAL_INDEX, NUM_CLASSES

#: Keywords that describe the photograph, not the eye: they carry no diagnosis.
PHOTO_NOTES: frozenset[str] = frozenset({
    "lens dust",
    "low image quality",
    "optic disk photographically invisible",
    "no fundus image",
    "anterior segment image",
    "image offset",
})

#: Keyword -> class code, for every keyword that is not ODIR's catch-all O.
KEYWORD_CLASS: dict[str, str] = {
    "normal fundus": "N",
    # diabetic retinopathy, every grade (ODIR grades NPDR mild/moderate/severe and PDR)
    "mild nonproliferative retinopathy": "D",
    "moderate non proliferative retinopathy": "D",
    "suspected moderate non proliferative retinopathy": "D",
    "severe nonproliferative retinopathy": "D",
    "proliferative diabetic retinopathy": "D",
    "severe proliferative diabetic retinopathy": "D",
    "diabetic retinopathy": "D",
    "suspected diabetic retinopathy": "D",
    # glaucoma (the official labels count suspected glaucoma as G)
    "glaucoma": "G",
    "suspected glaucoma": "G",
    "cataract": "C",
    # age-related macular degeneration (drusen alone is O in the official labels)
    "dry age-related macular degeneration": "A",
    "wet age-related macular degeneration": "A",
    "age-related macular degeneration": "A",
    "hypertensive retinopathy": "H",
    # pathological myopia and its named maculopathy
    "pathological myopia": "M",
    "myopic maculopathy": "M",
    "myopia retinopathy": "M",
}

_SPLIT = re.compile(r"[,，;；]")


def split_keywords(text: str | None) -> list[str]:
    """One eye's keyword cell -> normalised keywords (lower case, single spaces)."""
    if not text:
        return []
    out = []
    for part in _SPLIT.split(text):
        kw = " ".join(part.strip().lower().split())
        if kw:
            out.append(kw)
    return out


def keyword_class(keyword: str) -> str | None:
    """Class code of one normalised keyword: None for a photograph note, O when unlisted."""
    if keyword in PHOTO_NOTES:
        return None
    return KEYWORD_CLASS.get(keyword, "O")


def eye_labels(keywords: str | None) -> tuple[np.ndarray, bool]:
    """One eye's keywords -> (uint8 [8] label vector, known).

    ``known`` is False when no keyword names a class (only photograph notes, or empty):
    the label vector is then all zeros and must not be used as a target. N is set only
    when the eye is normal and no disease keyword is present."""
    labels = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for kw in split_keywords(keywords):
        code = keyword_class(kw)
        if code is not None:
            labels[CLASS_CODES.index(code)] = 1
    known = bool(labels.any())
    if labels[np.arange(NUM_CLASSES) != NORMAL_INDEX].any():
        labels[NORMAL_INDEX] = 0
    return labels, known


def patient_from_eyes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The official patient rule from two eyes: any class in either eye; N only when both are normal."""
    patient = np.maximum(left, right).astype(np.uint8)
    disease = patient[np.arange(NUM_CLASSES) != NORMAL_INDEX].any()
    patient[NORMAL_INDEX] = int(bool(left[NORMAL_INDEX]) and bool(right[NORMAL_INDEX]) and not disease)
    return patient


def eye_label_matrices(keyword_pairs: Iterable[tuple[str | None, str | None]]) -> dict[str, np.ndarray]:
    """Per-eye label matrices for many patients: ``left``/``right`` uint8 [N,8] and
    ``left_known``/``right_known`` bool [N] (False = no usable per-eye label)."""
    rows = [(eye_labels(lk), eye_labels(rk)) for lk, rk in keyword_pairs]
    if not rows:
        empty = np.zeros((0, NUM_CLASSES), np.uint8)
        return {"left": empty, "right": empty.copy(), "left_known": np.zeros(0, bool), "right_known": np.zeros(0, bool)}
    return {
        "left": np.stack([r[0][0] for r in rows]),
        "right": np.stack([r[1][0] for r in rows]),
        "left_known": np.array([r[0][1] for r in rows], dtype=bool),
        "right_known": np.array([r[1][1] for r in rows], dtype=bool),
    }
