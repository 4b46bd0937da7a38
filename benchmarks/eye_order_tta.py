"""Eye-order test-time averaging on finished feature-bank runs: left-right, right-left, both.

    python benchmarks/eye_order_tta.py runs/cpu/lever_swap/bank_f5_s{0,1,2} runs/cpu/lever_base/bank_f5_s{0,1,2}

Why: a model trained with ``--swap-eyes`` has seen both orders, so averaging its prediction for
(left, right) and (right, left) is a free ensemble of two views of the same patient, as the
mirror (``--hflip-tta``) is. A model trained in one order only is shown for comparison: there the
swapped order is a view it never saw. Each run is scored at the official 0.5 protocol on its
split's validation and held-out patients, from the bank's plain view (the one ``dms-net-train``
scores), so the "left-right" column reproduces the run's own numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dms_net_core.metrics import odir_official_score
from dms_net_core.model.stage_split import FromStage
from training.bank_train import predict_bank
from training.train import open_bank_run


def order_scores(run_dir: Path) -> dict[str, Any]:
    """Official scores of one run on val and test: as trained, eyes swapped, and their mean."""
    run_args, model, bank, data = open_bank_run(Path(run_dir) / "best.pt")
    net = FromStage(model, bank.spec.stage)
    out: dict[str, Any] = {"run": str(run_dir), "swap_eyes": float(getattr(run_args, "swap_eyes", 0.0) or 0.0)}
    for side in ("val", "test"):
        rows, labels = data[side]["rows"], data[side]["labels"]
        forward = predict_bank(net, bank, rows)[0]
        backward = predict_bank(net, bank, rows[:, ::-1].copy())[0]
        out[side] = {name: odir_official_score(labels, p)["final"]
                     for name, p in (("left_right", forward), ("right_left", backward),
                                     ("mean", (forward + backward) / 2))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    try:
        rows = [order_scores(r) for r in args.runs]
    except (FileNotFoundError, ValueError) as exc:
        print(f"eye_order_tta: {exc}", file=sys.stderr)
        return 2
    print("| run | --swap-eyes | val: l-r / r-l / mean | test: l-r / r-l / **mean** |")
    print("|---|---:|---:|---:|")
    for r in rows:
        v, t = r["val"], r["test"]
        print(f"| {r['run']} | {r['swap_eyes']:g} | {v['left_right']:.4f} / {v['right_left']:.4f} / {v['mean']:.4f} "
              f"| {t['left_right']:.4f} / {t['right_left']:.4f} / **{t['mean']:.4f}** |")
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
