"""Write a patient-level stratified split JSON (the shipped ones: 15 % val, seed 0; and
15 % val + 15 % held-out test, seed 0).

    python -m training.make_split --labels ../shared/data/odir5k_256/labels.csv \
        --val-fraction 0.15 --seed 0 --output training/splits/odir5k_256_val15_seed0.json
    python -m training.make_split --labels ../shared/data/odir5k_256/labels.csv \
        --val-fraction 0.15 --test-fraction 0.15 --seed 0 --output training/splits/odir5k_256_val15_test15_seed0.json
    python -m training.make_split --labels ../shared/data/odir5k_256/labels.csv \
        --folds 5 --seed 0 --hold-out-patients demo/samples/labels.csv \
        --output training/splits/odir5k_256_cv5_seed0_fold{fold}.json

``--hold-out-patients``: patients (a CSV with a ``patient_id`` column) kept out of every fold as
the ``test`` side: the demo's sample exams must never be trained on by any member of the
cross-validated ensemble that the demo runs.
"""

from __future__ import annotations

import argparse
import csv

from dms_net_core.data.odir import load_odir
from dms_net_core.data.splits import cross_validation_folds, stratified_split, write_split


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Stratified patient split for ODIR-5K", add_help=add_help)
    parser.add_argument("--labels", required=True, help="labels.csv or the official ODIR-5K sheet")
    parser.add_argument("--images-dir", default=None, help="images folder (official layout)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.0,
                        help="held-out test patients (never used for training, epoch choice or thresholds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=0,
                        help="K > 1: write K cross-validation splits (train/val), --output containing {fold}")
    parser.add_argument("--hold-out-patients", default=None,
                        help="CSV with a patient_id column: with --folds, those patients are in no fold "
                             "(the 'test' side)")
    parser.add_argument("--output", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    loaded = load_odir(args.labels, args.images_dir)
    if args.folds:
        if "{fold}" not in args.output:
            raise SystemExit("make_split: --folds needs an --output containing {fold}, e.g. runs/cv_fold{fold}.json")
        held: list[str] = []
        records = loaded.records
        if args.hold_out_patients:
            with open(args.hold_out_patients, newline="") as f:
                wanted = {row["patient_id"] for row in csv.DictReader(f)}
            held = [r.patient_id for r in records if r.patient_id in wanted]
            records = [r for r in records if r.patient_id not in wanted]
        for k, split in enumerate(cross_validation_folds(records, args.folds, args.seed)):
            if held:
                split = {**split, "test": held}
            path = args.output.format(fold=k)
            write_split(path, split, loaded.records, seed=args.seed, val_fraction=1.0 / args.folds, source=args.labels,
                        fold=(k, args.folds))
            print(f"wrote {path}: {len(split['train'])} train / {len(split['val'])} val patients")
        return
    split = stratified_split(loaded.records, args.val_fraction, args.seed, test_fraction=args.test_fraction)
    write_split(args.output, split, loaded.records, seed=args.seed, val_fraction=args.val_fraction, source=args.labels,
                test_fraction=args.test_fraction)
    sizes = " / ".join(f"{len(ids)} {name}" for name, ids in split.items())
    print(f"wrote {args.output}: {sizes} patients "
          f"({len(loaded.skipped_missing_eye)} patients with one eye missing skipped)")


if __name__ == "__main__":
    main()
