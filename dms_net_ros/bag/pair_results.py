"""One row per pair of eyes, offline or live, and its CSV (``pairs.csv``).

`evaluate` turns each `ExamResult` of the exam pipeline into a `PairResult`; `compare` turns
each recorded ``DiagnosisResult`` into one; `replay` reads an earlier ``pairs.csv`` back. The
status strings are the pipeline's (`ExamStatus` values).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.exam_pipeline import ExamResult, ExamStatus

STATUS_OK, STATUS_UNGRADABLE, STATUS_ERROR = ExamStatus.OK.value, ExamStatus.UNGRADABLE.value, ExamStatus.ERROR.value
PAIR_FIELDS = ("exam_id", "patient_id", "left_stamp_ns", "right_stamp_ns", "status", "message",
               "left_quality", "right_quality", *(f"p_{c}" for c in CLASS_CODES), *(f"y_{c}" for c in CLASS_CODES),
               *(f"pl_{c}" for c in CLASS_CODES), *(f"pr_{c}" for c in CLASS_CODES))


@dataclass
class PairResult:
    """One left/right pair as the node would report it."""

    exam_id: str
    left_stamp_ns: int
    right_stamp_ns: int
    status: str = STATUS_OK
    message: str = "ok"
    probabilities: np.ndarray | None = None  # [C] float32 (also for UNGRADABLE offline: see evaluate_bag)
    left_quality: float = float("nan")
    right_quality: float = float("nan")
    patient_id: str = ""
    labels: np.ndarray | None = None
    left_probabilities: np.ndarray | None = None  # [C] per-eye head (models with per-eye heads)
    right_probabilities: np.ndarray | None = None
    keywords: tuple[str, str] | None = None  # (left, right) diagnostic keywords from the sidecar

    @property
    def stamp_ns(self) -> int:
        return max(self.left_stamp_ns, self.right_stamp_ns)

    @classmethod
    def from_exam(cls, exam_id: str, left_stamp_ns: int, right_stamp_ns: int, result: ExamResult) -> "PairResult":
        """The row of one exam-pipeline result (quality scores NaN where the gate did not grade)."""
        def score(report) -> float:
            return float(report.score) if report is not None else float("nan")

        return cls(exam_id=exam_id, left_stamp_ns=left_stamp_ns, right_stamp_ns=right_stamp_ns,
                   status=result.status.value, message=result.message, probabilities=result.probabilities,
                   left_quality=score(result.left_quality), right_quality=score(result.right_quality),
                   left_probabilities=result.left_probabilities, right_probabilities=result.right_probabilities)


def scored_pairs(pairs: list[PairResult], include_ungradable: bool = True) -> list[PairResult]:
    """Pairs that enter the metrics: labelled, with probabilities (ERROR pairs have none)."""
    ok = {STATUS_OK, STATUS_UNGRADABLE} if include_ungradable else {STATUS_OK}
    return [p for p in pairs if p.labels is not None and p.probabilities is not None and p.status in ok]


def write_pairs_csv(path: Path, pairs: list[PairResult]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PAIR_FIELDS)
        for p in pairs:
            labels = [str(int(v)) for v in p.labels] if p.labels is not None else [""] * len(CLASS_CODES)
            writer.writerow([p.exam_id, p.patient_id, p.left_stamp_ns, p.right_stamp_ns, p.status, p.message,
                             f"{p.left_quality:.4f}", f"{p.right_quality:.4f}", *_prob_cells(p.probabilities), *labels,
                             *_prob_cells(p.left_probabilities), *_prob_cells(p.right_probabilities)])


def _prob_cells(values: np.ndarray | None) -> list[str]:
    return [f"{v:.8f}" for v in values] if values is not None else [""] * len(CLASS_CODES)


def _prob_column(rec: dict[str, str], prefix: str) -> np.ndarray | None:
    cells = [rec.get(f"{prefix}{c}") or "" for c in CLASS_CODES]
    return np.asarray(cells, np.float32) if all(cells) else None


def read_pairs_csv(path: Path) -> list[PairResult]:
    """Read back `write_pairs_csv` (replay compares against an earlier `evaluate` run)."""
    out = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            out.append(PairResult(
                exam_id=rec["exam_id"], left_stamp_ns=int(rec["left_stamp_ns"]),
                right_stamp_ns=int(rec["right_stamp_ns"]),
                status=rec["status"], message=rec["message"], patient_id=rec["patient_id"],
                left_quality=float(rec["left_quality"]), right_quality=float(rec["right_quality"]),
                probabilities=_prob_column(rec, "p_"), labels=_prob_column(rec, "y_"),
                left_probabilities=_prob_column(rec, "pl_"), right_probabilities=_prob_column(rec, "pr_")))
    return out
