"""Merge the GPU job's suite summaries and keep the best checkpoint of one recipe, slim.

The device machine returns at most 8 files of 16 MiB each, so each kept checkpoint is
stripped to what `dms-net-export` needs (weights, configs, thresholds, metrics; no
optimizer state), stored fp16 (the demo bundle is exported with fp16 weights anyway) and
split into <= 15 MiB parts (`NAME.part00`, ...); join them with `cat NAME.part* > NAME`.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch

from training.run_suite import ensemble_scores, ensemble_table, markdown_table, summarize

SLIM_KEYS = ("model", "model_config", "preprocess", "thresholds", "metrics", "data_summary", "epoch", "step", "args")
PART_BYTES = 15 * 1024 * 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suites", nargs="+", required=True, help="run_suite output directories")
    p.add_argument("--out", required=True, help="merged summary JSON")
    p.add_argument("--keep", nargs="+", default=[], metavar="RECIPE=PATH",
                   help="keep the best run of RECIPE as a slim checkpoint at PATH (split in parts)")
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
    Path(args.out).write_text(json.dumps({"runs": runs, "by_recipe": by_recipe, "ensembles": ensembles, "table": table,
                                          "best": best}, indent=1, default=str) + "\n")
    print(table)


def keep_best(runs: list[dict], recipe: str, path: str) -> dict | None:
    """Save the best finished run of ``recipe`` (by validation final) as a slim fp16 checkpoint."""
    candidates = [r for r in runs if r.get("recipe") == recipe and "val" in r]
    if not candidates:
        print(f"no finished run of {recipe}: no checkpoint kept")
        return None
    best = max(candidates, key=lambda r: r["val"]["final"])
    ckpt = torch.load(Path(best["output_dir"]) / "best.pt", map_location="cpu", weights_only=True)
    slim = {k: ckpt[k] for k in SLIM_KEYS if k in ckpt}
    slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in slim["model"].items()}
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    data = buffer.getvalue()
    for i in range(0, len(data), PART_BYTES):
        Path(f"{path}.part{i // PART_BYTES:02d}").write_bytes(data[i:i + PART_BYTES])
    print(f"best {recipe}: seed {best['seed']} val final {best['val']['final']:.4f}; "
          f"checkpoint {len(data) / 2**20:.1f} MiB in {(len(data) + PART_BYTES - 1) // PART_BYTES} parts")
    return best

if __name__ == "__main__":
    main()
