"""Paired comparison of a training lever against its baseline (issue 22 item 4), from finished runs.

    python benchmarks/lever_compare.py --name "EMA 0.99" \\
        --base runs/cpu/lever_base/bank_f5_s{0,1,2} --lever runs/cpu/lever_ema/bank_f5_s{0,1,2}

Why paired: on 364 held-out patients one run's ODIR final moves by about 0.008 between seeds
(RESULTS 1b), more than most levers move it. Runs with the same seed share their split, their
initialisation and their data order up to the lever, so the lever's effect is the per-seed
difference, and its uncertainty is a patient bootstrap of the mean difference over seeds (the
same patients resampled for every run). A lever is adopted only when the mean held-out gain is
at least ``--min-gain`` (0.005, the noise rule RESULTS uses) and its 95 % interval excludes 0;
validation gains are shown, not used for the decision, because the best epoch was picked there.

Each run folder is a finished ``dms-net-train`` output: ``result.json`` (best epoch, seed) and
the validation and held-out probabilities it saved (``val_probs.npy``, ``test_probs.npy`` and
their labels). Prints a markdown table and, with ``--output``, writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.metrics import odir_official_score


def load_run(run_dir: Path) -> dict[str, Any]:
    """The saved predictions of one finished run, or a one-line error naming what is missing."""
    run_dir = Path(run_dir)
    needed = ["result.json", "val_probs.npy", "val_labels.npy", "test_probs.npy", "test_labels.npy"]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise SystemExit(f"lever_compare: {run_dir} lacks {', '.join(missing)}: give finished dms-net-train runs "
                         "on a split with a held-out side (--split-file with val and test)")
    result = json.loads((run_dir / "result.json").read_text())
    return {"dir": str(run_dir), "best_epoch": result.get("best_epoch"),
            **{f"{side}_{kind}": np.load(run_dir / f"{side}_{kind}.npy")
               for side in ("val", "test") for kind in ("probs", "labels")}}


def _finals(runs: list[dict[str, Any]], side: str, idx: np.ndarray | None = None) -> np.ndarray:
    out = []
    for r in runs:
        y, p = r[f"{side}_labels"], r[f"{side}_probs"]
        if idx is not None:
            y, p = y[idx], p[idx]
        out.append(odir_official_score(y, p)["final"])
    return np.asarray(out)


def compare(base: list[dict[str, Any]], lever: list[dict[str, Any]], *, bootstrap: int = 1000,
            min_gain: float = 0.005, seed: int = 0) -> dict[str, Any]:
    """Per-seed scores, the mean paired difference on each side, its patient-bootstrap interval on
    the held-out side, the seed ensembles' scores (mean probability), and the adoption verdict."""
    if len(base) != len(lever) or not base:
        raise ValueError(f"lever_compare: {len(base)} baseline and {len(lever)} lever runs; "
                         "pair them one to one by seed")
    for b, v in zip(base, lever):
        for side in ("val", "test"):
            if not np.array_equal(b[f"{side}_labels"], v[f"{side}_labels"]):
                raise ValueError(f"lever_compare: {b['dir']} and {v['dir']} were scored on different {side} patients; "
                                 "pair runs trained on the same --split-file")
    finals = {(who, side): _finals(runs, side) for who, runs in (("base", base), ("lever", lever))
              for side in ("val", "test")}
    out: dict[str, Any] = {"seeds": len(base), "rows": []}
    for i, (b, v) in enumerate(zip(base, lever)):
        out["rows"].append({"base": b["dir"], "lever": v["dir"],
                            "base_epoch": b["best_epoch"], "lever_epoch": v["best_epoch"],
                            **{f"{who}_{side}": float(finals[who, side][i])
                               for who in ("base", "lever") for side in ("val", "test")}})
    for side in ("val", "test"):
        diff = finals["lever", side] - finals["base", side]
        out[f"gain_{side}"] = float(diff.mean())
        out[f"gain_{side}_per_seed"] = [float(d) for d in diff]
        ens = {who: odir_official_score(runs[0][f"{side}_labels"],
                                        np.mean([r[f"{side}_probs"] for r in runs], axis=0))
               for who, runs in (("base", base), ("lever", lever))}
        out[f"ensemble_{side}"] = {who: float(s["final"]) for who, s in ens.items()}
    rng = np.random.default_rng(seed)
    n = len(base[0]["test_labels"])
    draws = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        draws.append(float((_finals(lever, "test", idx) - _finals(base, "test", idx)).mean()))
    out["gain_test_ci95"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
    out["min_gain"] = min_gain
    out["adopt"] = bool(out["gain_test"] >= min_gain and out["gain_test_ci95"][0] > 0)
    return out


def markdown(name: str, result: dict[str, Any]) -> str:
    """The per-seed table and the one-line verdict, as RESULTS.md shows them."""
    lines = ["| seed run | best epoch (base / lever) | val final (base / lever) | test final (base / lever) "
             "| test gain |",
             "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {Path(r['lever']).name} | {r['base_epoch']} / {r['lever_epoch']} | {r['base_val']:.4f} / "
                     f"{r['lever_val']:.4f} | {r['base_test']:.4f} / {r['lever_test']:.4f} | "
                     f"{r['lever_test'] - r['base_test']:+.4f} |")
    lo, hi = result["gain_test_ci95"]
    ens = result["ensemble_test"]
    lines.append(f"\n{name}: mean paired gain val {result['gain_val']:+.4f}, **held-out {result['gain_test']:+.4f} "
                 f"[{lo:+.4f}, {hi:+.4f}]** ({result['seeds']} seeds, patient bootstrap); {result['seeds']}-seed "
                 f"ensembles on the held-out side {ens['base']:.4f} -> {ens['lever']:.4f}; "
                 f"{'adopted' if result['adopt'] else 'not adopted'} "
                 f"(rule: gain >= {result['min_gain']} and interval above 0).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", nargs="+", required=True, type=Path, help="baseline run folders, one per seed")
    p.add_argument("--lever", nargs="+", required=True, type=Path, help="lever run folders, same seeds, same order")
    p.add_argument("--name", default="lever")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--min-gain", type=float, default=0.005)
    p.add_argument("--output", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    try:
        result = compare([load_run(d) for d in args.base], [load_run(d) for d in args.lever],
                         bootstrap=args.bootstrap, min_gain=args.min_gain)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(markdown(args.name, result))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"name": args.name, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
