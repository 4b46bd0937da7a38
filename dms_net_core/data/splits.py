"""Patient-level train/validation splits by multi-label iterative stratification.

Split by PATIENT (both eyes stay on one side: the eyes of one person are correlated, and
labels are per patient). `MultilabelStratifiedShuffleSplit` (package
``iterative-stratification``, Sechidis et al. 2011) keeps every class's prevalence close
to the whole set's, which plain random splits fail to do for the rare classes (H: 83
patients). Seeded, and written to JSON so every run and the GPU job use the same split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.odir import PatientRecord, labels_matrix, summarize_records

SPLIT_FORMAT_VERSION = 1


def stratified_split(records: list[PatientRecord], val_fraction: float = 0.15, seed: int = 0) -> dict[str, list[str]]:
    """``{"train": [ids], "val": [ids]}`` (ids in record order within each side)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(records) < 2:
        raise ValueError(f"need at least 2 patients to split, got {len(records)}")
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    y = labels_matrix(records)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros((len(records), 1)), y))
    ids = [r.patient_id for r in records]
    return {"train": [ids[i] for i in sorted(train_idx)], "val": [ids[i] for i in sorted(val_idx)]}


def write_split(path: str | Path, split: dict[str, list[str]], records: list[PatientRecord], *, seed: int, val_fraction: float, source: str) -> None:
    """Write the split with enough provenance to recognise it later."""
    by_id = {r.patient_id: r for r in records}
    doc: dict[str, Any] = {
        "format_version": SPLIT_FORMAT_VERSION,
        "method": "iterstrat.MultilabelStratifiedShuffleSplit by patient",
        "source": source,
        "seed": seed,
        "val_fraction": val_fraction,
        "class_codes": list(CLASS_CODES),
        "summary": {name: summarize_records(by_id[i] for i in ids) for name, ids in split.items()},
        **{name: list(ids) for name, ids in split.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def read_split(path: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` from a split JSON; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist - create it with `python -m training.make_split` or drop --split-file")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"split file {path} is not valid JSON ({exc.msg} at line {exc.lineno}) - regenerate it") from None
    if not isinstance(doc, dict) or "train" not in doc or "val" not in doc:
        raise ValueError(f"split file {path} lacks 'train'/'val' id lists - regenerate it")
    overlap = set(map(str, doc["train"])) & set(map(str, doc["val"]))
    if overlap:
        raise ValueError(f"split file {path}: {len(overlap)} patients in both train and val (e.g. {sorted(overlap)[:3]}) - regenerate it")
    return {"train": [str(i) for i in doc["train"]], "val": [str(i) for i in doc["val"]]}
