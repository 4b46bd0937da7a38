"""What the coherence rule (N never positive beside a disease) does to the ODIR score.

Reads two `dms-net-eval --output-dir` folders of one bundle, the tuning side (validation) and
the held-out side, and prints one table: the official score at 0.5, the decisions at the
bundle's thresholds with and without the rule, the rule at 0.5, and the rule at thresholds
tuned under it (`tune_decision_thresholds`, fitted on the tuning side only and applied to both).

    dms-net-eval --model models/demo --split-file S --subset val  --output-dir runs/eval/val  --no-plots
    dms-net-eval --model models/demo --split-file S --subset test --output-dir runs/eval/test --no-plots
    python benchmarks/coherence_rule.py runs/eval/val runs/eval/test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dms_net_core.metrics import odir_decision_score, odir_official_score, tune_decision_thresholds
from dms_net_core.postprocess import coherent_positive


def _load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    report = json.loads((folder / "report.json").read_text())
    return np.load(folder / "labels.npy"), np.load(folder / "probs.npy"), np.asarray(report["thresholds"], np.float32)


def _normal_with_disease(positive: np.ndarray) -> int:
    return int((positive[:, 0] & positive[:, 1:].any(1)).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tuning_dir", type=Path, help="dms-net-eval output of the side the thresholds were tuned on")
    p.add_argument("held_out_dir", type=Path, help="dms-net-eval output of the held-out side")
    args = p.parse_args(argv)
    yv, pv, shipped = _load(args.tuning_dir)
    yt, pt, _ = _load(args.held_out_dir)
    under_rule = tune_decision_thresholds(yv, pv, shipped)
    rows = [
        ("official score (p > 0.5, no rule)", lambda y, q: odir_official_score(y, q)),
        ("bundle thresholds, without the rule", lambda y, q: odir_decision_score(y, q, q > shipped)),
        ("bundle thresholds, coherent rule (shipped)", lambda y, q: odir_decision_score(
            y, q, coherent_positive(q, shipped))),
        ("p > 0.5, coherent rule", lambda y, q: odir_decision_score(y, q, coherent_positive(q, 0.5))),
        ("thresholds tuned under the rule on the tuning side, coherent", lambda y, q: odir_decision_score(
            y, q, coherent_positive(q, under_rule))),
    ]
    print(f"| decision | {args.tuning_dir.name} final (kappa) | {args.held_out_dir.name} final (kappa) |")
    print("|---|---:|---:|")
    for name, score in rows:
        a, b = score(yv, pv), score(yt, pt)
        print(f"| {name} | {a['final']:.4f} ({a['kappa']:.4f}) | {b['final']:.4f} ({b['kappa']:.4f}) |")
    print(f"\nN beside a disease without the rule at the bundle thresholds: {_normal_with_disease(pv > shipped)} of "
          f"{len(yv)} ({args.tuning_dir.name}), {_normal_with_disease(pt > shipped)} of {len(yt)} "
          f"({args.held_out_dir.name})")
    print("bundle thresholds      " + " ".join(f"{t:.2f}" for t in shipped))
    print("tuned under the rule   " + " ".join(f"{t:.2f}" for t in under_rule))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
