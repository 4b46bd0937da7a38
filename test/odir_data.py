"""Where the tests find real ODIR-5K data.

Every test reads the small real subset shipped in the repository (``test/data/odir5k_subset``,
provenance in its README), so a clone passes its own tests with nothing beside it. The few
tests that are about the full 2,762-patient 256 px set (its exact counts, the shipped splits
being reproducible from it, the quality gate's pass rate over hundreds of photographs) carry
the ``odir_full`` marker and run only when ``ODIR_256_DIR`` names that set; otherwise they are
skipped with `FULL_ODIR_SKIP_REASON` (see ``test/conftest.py``). No test looks for data
outside the repository by any other route.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSET_DIR = REPO / "test" / "data" / "odir5k_subset"
SUBSET_LABELS = SUBSET_DIR / "labels.csv"
#: the subset's own stratified splits (the shipped training/splits/ name patients it lacks)
SUBSET_SPLIT = SUBSET_DIR / "splits" / "val25_seed0.json"
SUBSET_SPLIT3 = SUBSET_DIR / "splits" / "val25_test25_seed0.json"

FULL_ODIR_ENV = "ODIR_256_DIR"
FULL_ODIR_SKIP_REASON = (
    f"opt-in: needs the full ODIR-5K 256 px set (labels.csv + images/); set {FULL_ODIR_ENV}=/path/to/odir5k_256 to run"
)


def full_odir_dir() -> Path | None:
    """The full set named by ``ODIR_256_DIR``, or None when the variable is unset or empty."""
    value = os.environ.get(FULL_ODIR_ENV, "").strip()
    return Path(value) if value else None


def check_full_odir_dir(path: Path) -> None:
    """Refuse an ``ODIR_256_DIR`` that names no dataset, in one line (the user asked for it)."""
    if not (path / "labels.csv").is_file() or not (path / "images").is_dir():
        raise ValueError(f"{FULL_ODIR_ENV}={path} has no labels.csv and images/: "
                         "point it at the ODIR-5K 256 px folder or unset it")


def subset_rows() -> list[dict[str, str]]:
    """The subset's labels.csv rows as strings, in file order."""
    with open(SUBSET_LABELS, newline="") as f:
        return list(csv.DictReader(f))


def subset_two_eyed_pairs(n: int) -> tuple[tuple[str, str], ...]:
    """``(left_name, right_name)`` image file names of the first ``n`` two-eyed subset patients."""
    rows = [r for r in subset_rows() if r["has_both"] == "1"][:n]
    return tuple((Path(r["left_file"]).name, Path(r["right_file"]).name) for r in rows)
