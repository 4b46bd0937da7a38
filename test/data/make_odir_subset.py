"""Choose and copy the small real ODIR-5K subset the tests use (``test/data/odir5k_subset``).

The tests need real fundus photographs and real label rows, but a clone must pass its own
tests with nothing beside it, so a few dozen patients of the 256 px development set are
copied into the repository. This script is the rule that chose them; rerunning it with the
same inputs rewrites the same files (seeded choice, rows in the source file's order, image
bytes copied unchanged)::

    python test/data/make_odir_subset.py --source /path/to/odir5k_256   # or ODIR_256_DIR=...

The rule (seed 0; every pool sorted by integer patient id, then one seeded permutation):

- two-eyed patients only from the TRAIN side of
  ``training/splits/odir5k_256_val15_test15_seed0.json``, so the shipped demo model's
  validation and held-out test patients stay untouched, and never one of ``demo/samples``;
- 3 two-eyed patients whose keywords name "lens dust" (a photo note the official labels carry
  and the keyword -> class rules must ignore);
- 5 two-eyed single-label patients per class N D G C A H M O;
- 12 two-eyed patients with two or more classes (multi-label);
- 4 patients with one eye missing (an empty file column), 2 of them with "low image quality"
  (in this set that note only comes with a missing eye: the publishers dropped the photo).
  The loader skips one-eyed patients, so they are in no side of any shipped split and no
  shipped model saw them.

It also writes the subset's own stratified splits (``splits/``), which the training and
evaluation tests pass with ``--split-file`` (the shipped splits name patients the subset lacks).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dms_net_core.classes import CLASS_CODES  # noqa: E402
from dms_net_core.data.odir import load_odir  # noqa: E402
from dms_net_core.data.splits import stratified_split, write_split  # noqa: E402

SHIPPED_3WAY_SPLIT = REPO / "training" / "splits" / "odir5k_256_val15_test15_seed0.json"
DEMO_LABELS = REPO / "demo" / "samples" / "labels.csv"
OUT_DIR = REPO / "test" / "data" / "odir5k_subset"

SEED = 0
LENS_DUST = 3
SINGLE_LABEL_PER_CLASS = 5
MULTI_LABEL = 12
ONE_EYED_LOW_QUALITY = 2
ONE_EYED = 4  # in all, the low-quality ones included
#: the subset's own splits: (file name, val fraction, test fraction)
SUBSET_SPLITS = (("val25_seed0.json", 0.25, 0.0), ("val25_test25_seed0.json", 0.25, 0.25))


def _classes(row: dict[str, str]) -> list[str]:
    return [c for c in CLASS_CODES if row[c] == "1"]


def _keywords(row: dict[str, str]) -> str:
    return f"{row['left_keywords']},{row['right_keywords']}".lower()


def choose_patients(rows: list[dict[str, str]], train_ids: set[str], excluded: set[str], seed: int = SEED) -> list[str]:
    """Patient ids picked by the module docstring's rule, in pick order."""
    rng = np.random.default_rng(seed)
    by_id = {r["patient_id"]: r for r in rows}
    two_eyed = [i for i in sorted(train_ids, key=int)
                if i in by_id and by_id[i]["has_both"] == "1" and i not in excluded]
    one_eyed = [r["patient_id"] for r in sorted(rows, key=lambda r: int(r["patient_id"]))
                if r["has_both"] != "1" and r["patient_id"] not in train_ids and r["patient_id"] not in excluded]
    two_eyed = [two_eyed[i] for i in rng.permutation(len(two_eyed))]
    one_eyed = [one_eyed[i] for i in rng.permutation(len(one_eyed))]
    chosen: list[str] = []

    def take(pool: list[str], n: int, keep) -> None:
        picked = [i for i in pool if i not in chosen and keep(by_id[i])][:n]
        if len(picked) < n:
            raise SystemExit(f"only {len(picked)} of {n} patients fit a rule: is --source the full ODIR-5K 256 px set?")
        chosen.extend(picked)

    take(two_eyed, LENS_DUST, lambda r: "lens dust" in _keywords(r))
    for code in CLASS_CODES:
        take(two_eyed, SINGLE_LABEL_PER_CLASS, lambda r, c=code: _classes(r) == [c])
    take(two_eyed, MULTI_LABEL, lambda r: len(_classes(r)) >= 2)
    take(one_eyed, ONE_EYED_LOW_QUALITY, lambda r: "low image quality" in _keywords(r))
    take(one_eyed, ONE_EYED - ONE_EYED_LOW_QUALITY, lambda r: True)
    return chosen


def write_subset(source: Path, out_dir: Path, ids: list[str]) -> None:
    """labels.csv rows (source order, same columns) and their image files, copied unchanged."""
    with open(source / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r["patient_id"] in set(ids)]
    if out_dir.exists():
        shutil.rmtree(out_dir / "images", ignore_errors=True)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    with open(out_dir / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        for col in ("left_file", "right_file"):
            if r[col]:
                shutil.copyfile(source / r[col], out_dir / r[col])


def write_subset_splits(out_dir: Path) -> None:
    loaded = load_odir(out_dir / "labels.csv")
    source = os.path.relpath(out_dir / "labels.csv", REPO)
    for name, val, test in SUBSET_SPLITS:
        split = stratified_split(loaded.records, val, SEED, test_fraction=test)
        write_split(out_dir / "splits" / name, split, loaded.records, seed=SEED, val_fraction=val, source=source,
                    test_fraction=test)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=os.environ.get("ODIR_256_DIR"),
                   help="the full ODIR-5K 256 px set (labels.csv + images/); "
                   "default: $ODIR_256_DIR (required if unset)")
    p.add_argument("--output", type=Path, default=OUT_DIR, help=f"default: {os.path.relpath(OUT_DIR, REPO)}")
    args = p.parse_args(argv)
    if args.source is None or not (args.source / "labels.csv").is_file():
        p.error(f"no labels.csv in {args.source}: pass --source DIR or set ODIR_256_DIR to the ODIR-5K 256 px set")
    with open(args.source / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_ids = set(json.loads(SHIPPED_3WAY_SPLIT.read_text())["train"])
    with open(DEMO_LABELS, newline="") as f:
        demo_ids = {r["patient_id"] for r in csv.DictReader(f)}
    ids = choose_patients(rows, train_ids, demo_ids)
    write_subset(args.source, args.output, ids)
    write_subset_splits(args.output)
    size = sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())
    print(f"wrote {args.output}: {len(ids)} patients, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
