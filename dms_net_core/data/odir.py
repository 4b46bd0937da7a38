"""ODIR-5K label files -> `PatientRecord` list (torch-free; the torch Dataset is in training/).

Two layouts parse into the same records, so the 256 px development subset and the
full-resolution official release feed the same trainer and evaluator:

- the shared ``labels.csv``: ``patient_id,left_file,right_file,has_both,age,sex,N..O,
  left_keywords,right_keywords``; file paths relative to the csv's folder; an empty file
  column means that eye is missing;
- the official spreadsheet (``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` or a csv
  export of it): ``ID, Patient Age, Patient Sex, Left-Fundus, Right-Fundus,
  Left-Diagnostic Keywords, Right-Diagnostic Keywords, N..O``; file names are looked up
  in an images folder given by argument.

Patients with one eye missing are skipped by default (DMS-Net needs a pair); the count
is reported in `OdirLoadResult.skipped_missing_eye` so the data summary can state it.
Every bad row raises `OdirFormatError` naming file, row and fix in one line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dms_net_core.classes import CLASS_CODES, NUM_CLASSES

SHARED_COLUMNS = ("patient_id", "left_file", "right_file", *CLASS_CODES)
OFFICIAL_COLUMNS = ("ID", "Left-Fundus", "Right-Fundus", *CLASS_CODES)


class OdirFormatError(ValueError):
    """A label file or image the loader cannot use; the message names file and row."""


@dataclass
class PatientRecord:
    """One patient: both eyes' image paths and the patient-level multi-label vector."""

    patient_id: str
    left_path: str | None
    right_path: str | None
    labels: np.ndarray  # uint8 [8], CLASS_CODES order
    age: int | None = None
    sex: str | None = None
    keywords: dict[str, str] = field(default_factory=dict)  # {"left": ..., "right": ...}

    @property
    def has_both(self) -> bool:
        return bool(self.left_path) and bool(self.right_path)

    @property
    def label_key(self) -> str:
        """The label set as a string such as "01000001" (CutMix pairs samples by it)."""
        return "".join(str(int(v)) for v in self.labels)


@dataclass
class OdirLoadResult:
    """Records plus what was dropped and why (goes into the checkpoint's data summary)."""

    records: list[PatientRecord]
    source: str
    layout: str
    skipped_missing_eye: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return summarize_records(self.records) | {
            "source": self.source,
            "layout": self.layout,
            "skipped_missing_eye": len(self.skipped_missing_eye),
        }


def summarize_records(records: Iterable[PatientRecord]) -> dict[str, Any]:
    """Patient count and per-class positive counts (plain python types)."""
    records = list(records)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for r in records:
        counts += r.labels
    return {"num_patients": len(records), "class_counts": {c: int(n) for c, n in zip(CLASS_CODES, counts)}}


def labels_matrix(records: Iterable[PatientRecord]) -> np.ndarray:
    """N x 8 uint8 label matrix in record order."""
    rows = [r.labels for r in records]
    return np.stack(rows).astype(np.uint8) if rows else np.zeros((0, NUM_CLASSES), dtype=np.uint8)


def _parse_label(value: Any, source: str, row: int, code: str) -> int:
    text = str(value).strip() if value is not None else ""
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    raise OdirFormatError(f"{source} row {row}: label column {code} is {text!r}; expected 0 or 1 - fix the label file")


def _parse_age(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _read_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a csv or xlsx (first sheet); row dicts keyed by header."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError as exc:  # pragma: no cover - openpyxl is in requirements/train.txt
            raise OdirFormatError(f"{path}: reading .xlsx needs openpyxl; "
                                  "pip install openpyxl or export the sheet as csv") from exc
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            rows = list(wb.worksheets[0].iter_rows(values_only=True))
        finally:
            wb.close()
        if not rows:
            raise OdirFormatError(f"{path}: the spreadsheet is empty; expected a header row")
        header = [_text(h) for h in rows[0]]
        body = [dict(zip(header, r)) for r in rows[1:] if any(v not in (None, "") for v in r)]
        return header, body
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        body = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    return header, body


def detect_layout(header: list[str]) -> str:
    """"shared" or "official" from the header columns."""
    cols = set(header)
    if set(SHARED_COLUMNS) <= cols:
        return "shared"
    if set(OFFICIAL_COLUMNS) <= cols:
        return "official"
    missing_shared = sorted(set(SHARED_COLUMNS) - cols)
    missing_official = sorted(set(OFFICIAL_COLUMNS) - cols)
    raise OdirFormatError(
        f"unrecognised label layout: missing columns {missing_shared} (labels.csv layout) or {missing_official} "
        "(official ODIR-5K layout) - check the header row"
    )


def _resolve(path_text: str, base: Path, source: str, row: int, check_files: bool) -> str | None:
    if not path_text:
        return None
    p = Path(path_text)
    if not p.is_absolute():
        p = base / p
    if check_files and not p.is_file():
        raise OdirFormatError(f"{source} row {row}: image file {p} does not exist - "
                              "fix the path or pass the right images folder")
    return str(p)


def load_odir(
    labels_path: str | Path,
    images_dir: str | Path | None = None,
    *,
    skip_missing_eye: bool = True,
    check_files: bool = True,
) -> OdirLoadResult:
    """Parse either label layout (auto-detected from the header).

    ``images_dir``: for the official layout, the folder holding the ``Left-Fundus`` /
    ``Right-Fundus`` files (default: the label file's folder); for the shared layout,
    overrides the csv's folder as base for the relative paths. ``check_files`` verifies
    that every referenced image exists (unreadable content is reported at decode time by
    `load_rgb`, naming the file).
    """
    path = Path(labels_path)
    if not path.is_file():
        raise OdirFormatError(f"label file {path} does not exist - "
                              "pass the path to labels.csv or the ODIR-5K annotation sheet")
    header, rows = _read_table(path)
    layout = detect_layout(header)
    if layout == "shared":
        base = Path(images_dir) if images_dir is not None else path.parent
        id_col, left_col, right_col, age_col, sex_col, lk_col, rk_col = (
            "patient_id", "left_file", "right_file", "age", "sex", "left_keywords", "right_keywords")
    else:
        base = Path(images_dir) if images_dir is not None else path.parent
        id_col, left_col, right_col, age_col, sex_col, lk_col, rk_col = (
            "ID", "Left-Fundus", "Right-Fundus", "Patient Age", "Patient Sex",
            "Left-Diagnostic Keywords", "Right-Diagnostic Keywords")
    records: list[PatientRecord] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet shows it
        pid = _text(row.get(id_col))
        if pid.endswith(".0") and pid[:-2].isdigit():  # xlsx stores ids as floats
            pid = pid[:-2]
        if not pid:
            raise OdirFormatError(f"{path} row {i}: empty {id_col} - every row needs a patient id")
        if pid in seen:
            raise OdirFormatError(f"{path} row {i}: duplicate patient id {pid} - each patient must appear once")
        seen.add(pid)
        labels = np.array([_parse_label(row.get(c), str(path), i, c) for c in CLASS_CODES], dtype=np.uint8)
        left = _resolve(_text(row.get(left_col)), base, str(path), i, check_files)
        right = _resolve(_text(row.get(right_col)), base, str(path), i, check_files)
        rec = PatientRecord(
            patient_id=pid,
            left_path=left,
            right_path=right,
            labels=labels,
            age=_parse_age(row.get(age_col)),
            sex=_text(row.get(sex_col)) or None,
            keywords={"left": _text(row.get(lk_col)), "right": _text(row.get(rk_col))},
        )
        if not rec.has_both and skip_missing_eye:
            skipped.append(pid)
            continue
        records.append(rec)
    return OdirLoadResult(records=records, source=str(path), layout=layout, skipped_missing_eye=skipped)


def select_patients(records: list[PatientRecord], patient_ids: Iterable[str], *,
                    source: str = "split file") -> list[PatientRecord]:
    """Records for ``patient_ids`` in that order; unknown ids raise naming the first few."""
    by_id = {r.patient_id: r for r in records}
    ids = [str(p) for p in patient_ids]
    missing = [p for p in ids if p not in by_id]
    if missing:
        raise OdirFormatError(
            f"{source}: {len(missing)} patient ids not in the label file (e.g. {missing[:5]}) - "
            "the split belongs to another dataset"
        )
    return [by_id[p] for p in ids]
