"""Patient-level train/validation(/test) splits by multi-label iterative stratification.

Split by PATIENT (both eyes stay on one side: the eyes of one person are correlated, and
labels are per patient). `MultilabelStratifiedShuffleSplit` (package
``iterative-stratification``, Sechidis et al. 2011) keeps every class's prevalence close
to the whole set's, which plain random splits fail to do for the rare classes (H: 83
patients). Seeded, and written to JSON so every run and the GPU job use the same split.

An optional third side, ``test``, holds patients that neither training, epoch selection nor
threshold tuning ever sees: validation picks the epoch and the thresholds, so its score is
optimistic, and the test score is the held-out number to quote (`training.train` reports it
when the split has one). The test side is drawn first, then validation from the rest, so
``val_fraction`` and ``test_fraction`` are both fractions of the whole set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.odir import PatientRecord, labels_matrix, summarize_records

SPLIT_FORMAT_VERSION = 1


SIDES = ("train", "val", "test")


def _stratified_pick(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, picked) row indices, ``picked`` ~ ``fraction`` of the rows with every class's share kept."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    rest, picked = next(splitter.split(np.zeros((len(y), 1)), y))
    return np.sort(rest), np.sort(picked)


def stratified_split(records: list[PatientRecord], val_fraction: float = 0.15, seed: int = 0,
                     test_fraction: float = 0.0) -> dict[str, list[str]]:
    """``{"train": [ids], "val": [ids]}`` plus ``"test"`` when ``test_fraction > 0``.

    Ids keep record order within each side. Without a test side the result is the same as
    before test sides existed (the shipped ``odir5k_256_val15_seed0.json`` stays reproducible).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError("test_fraction must be in [0, 1) and val + test < 1, "
                         f"got val {val_fraction}, test {test_fraction}")
    if len(records) < 2 + (test_fraction > 0):
        raise ValueError(f"need at least {2 + (test_fraction > 0)} patients to split, got {len(records)}")
    ids = np.array([r.patient_id for r in records], dtype=object)
    y = labels_matrix(records)
    split: dict[str, list[str]] = {}
    pool = np.arange(len(records))
    if test_fraction > 0:
        rest, test = _stratified_pick(y, test_fraction, seed)
        split["test"] = list(ids[test])
        pool = rest
    rest, val = _stratified_pick(y[pool], val_fraction / (1.0 - test_fraction), seed)
    split = {"train": list(ids[pool[rest]]), "val": list(ids[pool[val]]), **split}
    return split


def cross_validation_folds(records: list[PatientRecord], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """``folds`` splits ``{"train", "val"}`` whose val sides partition the patients (multilabel
    stratified k-fold): every patient is scored once by the member that never trained on it."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if folds < 2 or len(records) < folds:
        raise ValueError(f"need 2 <= folds <= patients, got {folds} folds for {len(records)} patients")
    ids = np.array([r.patient_id for r in records], dtype=object)
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [{"train": list(ids[np.sort(tr)]), "val": list(ids[np.sort(va)])}
            for tr, va in splitter.split(np.zeros((len(records), 1)), labels_matrix(records))]


def write_split(path: str | Path, split: dict[str, list[str]], records: list[PatientRecord], *, seed: int,
                val_fraction: float, source: str, test_fraction: float = 0.0,
                fold: tuple[int, int] | None = None) -> None:
    """Write the split with enough provenance to recognise it later (``fold``: (k, of K))."""
    by_id = {r.patient_id: r for r in records}
    doc: dict[str, Any] = {
        "format_version": SPLIT_FORMAT_VERSION,
        "method": ("iterstrat.MultilabelStratifiedKFold by patient" if fold else
                   "iterstrat.MultilabelStratifiedShuffleSplit by patient"),
        **({"fold": fold[0], "folds": fold[1]} if fold else {}),
        "source": source,
        "seed": seed,
        "val_fraction": val_fraction,
        **({"test_fraction": test_fraction} if "test" in split else {}),
        "class_codes": list(CLASS_CODES),
        "summary": {name: summarize_records(by_id[i] for i in ids) for name, ids in split.items()},
        **{name: list(ids) for name, ids in split.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def read_split(path: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` (and ``"test"`` when present) from a split JSON; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist - "
                                "create it with `python -m training.make_split` or drop --split-file")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"split file {path} is not valid JSON ({exc.msg} at line {exc.lineno}) - "
                         "regenerate it") from None
    if not isinstance(doc, dict) or "train" not in doc or "val" not in doc:
        raise ValueError(f"split file {path} lacks 'train'/'val' id lists - regenerate it")
    sides = {name: [str(i) for i in doc[name]] for name in SIDES if name in doc}
    names = list(sides)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap = set(sides[a]) & set(sides[b])
            if overlap:
                raise ValueError(f"split file {path}: {len(overlap)} patients in both {a} and {b} "
                                 f"(e.g. {sorted(overlap)[:3]}) - regenerate it")
    return sides
