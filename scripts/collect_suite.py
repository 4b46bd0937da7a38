"""Merge the GPU job's suite summaries and keep chosen checkpoints, slim.

The device machine returns at most 8 files of 16 MiB each, so each kept checkpoint is
stripped to what `dms-net-export` and `dms-net-ensemble` need (weights, configs,
thresholds, metrics; no optimizer state) and stored fp16 (bundles are exported with fp16
weights anyway). `--keep` keeps the best seed of a recipe, `--keep-all` every finished seed
(the members of a seed ensemble). scripts/gpu_job.sh tars the kept files and splits the
tar into parts that fit the return limit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dms_net_core.checkpoint import load_checkpoint, slim_checkpoint
from training.run_suite import ensemble_scores, ensemble_table, markdown_table, summarize


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suites", nargs="+", required=True, help="run_suite output directories")
    p.add_argument("--out", required=True, help="merged summary JSON")
    p.add_argument("--keep", nargs="+", default=[], metavar="RECIPE=PATH",
                   help="keep the best run of RECIPE as a slim checkpoint at PATH")
    p.add_argument("--keep-all", nargs="+", default=[], metavar="RECIPE=DIR",
                   help="keep every finished run of RECIPE as DIR/RECIPE_seedN.pt (slim)")
    args = p.parse_args(argv)
    runs = []
    for suite in args.suites:
        f = Path(suite) / "summary.json"
        if f.exists():
            runs += json.loads(f.read_text())["runs"]
        else:
            print(f"no summary in {suite} (that group failed or was cut off)")
    by_recipe = summarize(runs)
    ensembles = ensemble_scores(runs)
    table = markdown_table(by_recipe) + "\n" + ensemble_table(ensembles)
    best = {}
    for item in args.keep:
        recipe, _, path = item.rpartition("=")
        best[recipe] = keep_best(runs, recipe, path)
    kept = {}
    for item in args.keep_all:
        recipe, _, folder = item.rpartition("=")
        kept[recipe] = [save_slim(r, Path(folder) / f"{recipe}_seed{r['seed']}.pt") for r in finished(runs, recipe)]
    Path(args.out).write_text(json.dumps({"runs": runs, "by_recipe": by_recipe, "ensembles": ensembles, "table": table,
                                          "best": best, "kept": kept}, indent=1, default=str) + "\n")
    print(table)


def finished(runs: list[dict], recipe: str) -> list[dict]:
    return [r for r in runs if r.get("recipe") == recipe and "val" in r]


def keep_best(runs: list[dict], recipe: str, path: str) -> dict | None:
    """Save the best finished run of ``recipe`` (by validation final) as a slim fp16 checkpoint."""
    candidates = finished(runs, recipe)
    if not candidates:
        print(f"no finished run of {recipe}: no checkpoint kept")
        return None
    best = max(candidates, key=lambda r: r["val"]["final"])
    save_slim(best, Path(path))
    print(f"best {recipe}: seed {best['seed']} val final {best['val']['final']:.4f}")
    return best


def save_slim(run: dict, path: Path) -> str:
    """``run``'s best.pt without optimizer state, floating weights in fp16; returns the path."""
    slim = slim_checkpoint(load_checkpoint(Path(run["output_dir"]) / "best.pt"), half=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, path)
    print(f"kept {run['recipe']} seed {run['seed']}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return str(path)


if __name__ == "__main__":
    main()
