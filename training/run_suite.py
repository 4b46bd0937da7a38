"""Train a list of (recipe, seed) runs in ONE process, reusing the decoded image cache.

    python -m training.run_suite --runs dms_net_effnet_lite0:0,1,2 plain_binocular_effnet_lite0:0,1,2 \
        --output-dir runs/suite --time-budget-minutes 7

This is what runs on the GPU: decoding ODIR once (not once per run) and splitting one
wall-clock budget across the runs is what makes several models x seeds fit in minutes.
Each run gets ``remaining_budget / remaining_runs`` (so a run that stops early donates its
time to the next). Writes ``summary.json`` and ``summary.md`` (mean +- SD over seeds of the
validation ODIR final / kappa / F1 / AUC per recipe) after every run, so a suite cut off by
the machine's limit still leaves its finished results. `ensemble_scores` adds what averaging
the seeds' probabilities would score (from the probabilities each run saved), i.e. what
``dms-net-ensemble`` of those checkpoints would give, before anyone builds it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.train import parse_args, train_run


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Several DMS-Net training runs in one process", add_help=add_help)
    p.add_argument("--runs", nargs="+", required=True,
                   help="RECIPE:SEED[,SEED...] items, e.g. dms_net_effnet_lite0:0,1,2")
    p.add_argument("--output-dir", default="runs/suite")
    p.add_argument("--time-budget-minutes", type=float, default=None, help="for ALL runs together")
    p.add_argument("--train-args", default="", help="extra dms-net-train flags for every run (one string)")
    return p


def parse_runs(items: list[str]) -> list[tuple[str, int]]:
    """``RECIPE[+KEY=VALUE...]:SEED[,SEED...]`` items -> (run spec, seed) pairs.

    ``+KEY=VALUE`` overrides a field of the recipe, so the paper's Table 2 and 3 rows and the
    recipe levers run without a YAML file each: ``dms_net_effnet_lite0+use_casfm=false:0,1,2``,
    ``dms_net_effnet_lite0+cutmix_prob=0+pos_weight_power=0:0`` (see `run_arguments`).
    """
    runs = []
    for item in items:
        recipe, _, seeds = item.partition(":")
        if not recipe or recipe.startswith("+"):
            raise ValueError(f"bad run {item!r}: expected RECIPE[+KEY=VALUE...]:SEED[,SEED...]")
        for override in recipe.split("+")[1:]:
            if "=" not in override:
                raise ValueError(f"bad override {override!r} in {item!r}: "
                                 "expected KEY=VALUE (a model, augment or trainer setting)")
        for s in (seeds or "0").split(","):
            runs.append((recipe, int(s)))
    return runs


def run_arguments(spec: str) -> tuple[str, list[str]]:
    """Run spec -> (name for directories and tables, dms-net-train arguments).

    An override's KEY is a `DMSNetConfig` field (-> ``--model KEY=VALUE``), an `AugmentConfig`
    or `PreprocessConfig` field (-> ``--augment``/``--preprocess KEY=VALUE``; ``mean=[0.5,0.5,0.5]``)
    or a dms-net-train option (``pos_weight_power=0`` ->
    ``--pos-weight-power 0``); anything else fails here, before a GPU minute is spent."""
    from dms_net_core.data.augment import AugmentConfig
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.model.config import DMSNetConfig
    from training.train import get_args_parser

    recipe, *overrides = spec.split("+")
    name = "+".join([Path(recipe).stem, *overrides])
    args = ["--config", recipe]
    options = {a.dest: a for a in get_args_parser(add_help=False)._actions if a.option_strings}
    for override in overrides:
        key, _, value = override.partition("=")
        if key in DMSNetConfig.__dataclass_fields__:
            args += ["--model", override]
        elif key in AugmentConfig.__dataclass_fields__:
            args += ["--augment", override]
        elif key in PreprocessConfig.__dataclass_fields__:
            args += ["--preprocess", override]
        elif key in options and key not in ("model", "augment", "preprocess", "config"):
            flag = options[key].option_strings[0]
            if isinstance(options[key].default, bool):  # BooleanOptionalAction: --flag / --no-flag
                args.append(flag if value.lower() in ("1", "true", "yes") else flag.replace("--", "--no-", 1))
            else:
                args += [flag, value]
        else:
            raise ValueError(f"override {override!r} in {spec!r}: "
                             f"{key} is not a model, augment, preprocess or dms-net-train setting")
    return name, args


def _mean_sd(values: list[float]) -> dict[str, Any]:
    v = np.array(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and SD (ddof=1 when >1 seed) of each official metric per recipe, on validation and,
    when the split holds one out, on the test patients (``stats["test"]``)."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "val" in r:
            by_recipe.setdefault(r["recipe"], []).append(r)
    out: dict[str, Any] = {}
    for recipe, rs in by_recipe.items():
        stats: dict[str, Any] = {"seeds": [r["seed"] for r in rs], "n": len(rs)}
        for k in ("final", "kappa", "f1", "auc"):
            stats[k] = _mean_sd([r["val"][k] for r in rs])
        if all("test" in r for r in rs):
            stats["test"] = {k: _mean_sd([r["test"][k] for r in rs]) for k in ("final", "kappa", "f1", "auc")}
        stats["best_epochs"] = [r["best_epoch"] for r in rs]
        stats["train_s"] = [round(r["train_s"], 1) for r in rs]
        out[recipe] = stats
    return out


def _saved_files(run: dict[str, Any], side: str) -> tuple[Path, Path] | None:
    """(labels, probs) .npy files a finished run saved for ``side``, or None."""
    out = Path(run.get("output_dir", ""))
    labels, probs = out / f"{side}_labels.npy", out / f"{side}_probs.npy"
    return (labels, probs) if labels.is_file() and probs.is_file() else None


def ensemble_scores(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Official scores of mean-probability ensembles of finished runs, from their saved probabilities.

    One ensemble per recipe with >= 2 finished seeds, and one of all seeds of every two such
    recipes (e.g. DMS-Net + control). Runs whose patients differ (other split or caps) are
    not mixed: their label arrays must be identical.
    """
    from dms_net_core.metrics import odir_official_score

    finished: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "val" in r and _saved_files(r, "val") is not None:
            finished.setdefault(r["recipe"], []).append(r)
    groups = {name: rs for name, rs in finished.items() if len(rs) >= 2}
    names = list(groups)
    combos = dict(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            combos[f"{a} + {b}"] = groups[a] + groups[b]
    out: dict[str, Any] = {}
    for name, rs in combos.items():
        entry: dict[str, Any] = {"members": [f"{r['recipe']}:{r['seed']}" for r in rs]}
        for side in ("val", "test"):
            files = [_saved_files(r, side) for r in rs]
            if any(f is None for f in files):
                continue
            loaded = [(np.load(labels), np.load(probs)) for labels, probs in files]
            if any(not np.array_equal(x[0], loaded[0][0]) for x in loaded):
                continue
            entry[side] = odir_official_score(loaded[0][0], np.mean([x[1] for x in loaded], axis=0))
        if "val" in entry:
            out[name] = entry
    return out


def ensemble_table(ensembles: dict[str, Any]) -> str:
    if not ensembles:
        return ""
    lines = ["| mean-probability ensemble | members | val final | val kappa | test final | test kappa |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, e in ensembles.items():
        test = e.get("test")
        lines.append(f"| {name} | {len(e['members'])} | {e['val']['final']:.4f} | {e['val']['kappa']:.4f} | "
                     + (f"{test['final']:.4f} | {test['kappa']:.4f} |" if test else "- | - |"))
    return "\n".join(lines) + "\n"


def markdown_table(summary: dict[str, Any]) -> str:
    """Validation columns, then held-out test columns when any recipe has them."""
    with_test = any("test" in s for s in summary.values())
    head = "| recipe | seeds | val ODIR final | kappa | F1 (elem. acc.) | AUC |"
    rule = "|---|---|---:|---:|---:|---:|"
    if with_test:
        head += " test ODIR final | test kappa | test AUC |"
        rule += "---:|---:|---:|"
    lines = [head + " best epochs | s/run |", rule + "---|---|"]
    for recipe, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} +- {s[k]['sd']:.4f}" for k in ("final", "kappa", "f1", "auc")]
        if with_test:
            t = s.get("test")
            cells += [f"{t[k]['mean']:.4f} +- {t[k]['sd']:.4f}" if t else "-" for k in ("final", "kappa", "auc")]
        lines.append(f"| {recipe} | {','.join(map(str, s['seeds']))} | " + " | ".join(cells)
                     + f" | {s['best_epochs']} | {s['train_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    runs = parse_runs(args.runs)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pool: dict = {}  # decoded image caches shared by all runs
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    for i, (recipe, seed) in enumerate(runs):
        name, recipe_args = run_arguments(recipe)
        run_dir = out / f"{name.replace('=', '-')}_seed{seed}"
        argv_run = [*recipe_args, "--seed", str(seed), "--output-dir", str(run_dir), *args.train_args.split()]
        if args.time_budget_minutes is not None:
            left = args.time_budget_minutes - (time.time() - t0) / 60
            if left <= 0.1:
                print(f"suite budget spent: skipping {recipe} seed {seed} and the rest", flush=True)
                break
            argv_run += ["--time-budget-minutes", f"{left / (len(runs) - i):.3f}"]
        print(f"=== run {i + 1}/{len(runs)}: {recipe} seed {seed} ===", flush=True)
        try:
            res = train_run(parse_args(argv_run), cache_pool=pool)
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others' results
            res = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"run {recipe} seed {seed} failed: {res['error']}", flush=True)
        results.append({"recipe": name, "seed": seed, **res})
        summary = {"runs": results, "by_recipe": summarize(results), "ensembles": ensemble_scores(results),
                   "wall_s": time.time() - t0}
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        (out / "summary.md").write_text(markdown_table(summary["by_recipe"]) + "\n"
                                        + ensemble_table(summary["ensembles"]))
    if summary is None:  # the budget was spent before the first run
        summary = {"runs": results, "by_recipe": summarize(results), "ensembles": ensemble_scores(results)}
    print(markdown_table(summary["by_recipe"]) + "\n" + ensemble_table(summary["ensembles"]), flush=True)
    return {k: summary[k] for k in ("runs", "by_recipe", "ensembles")}


if __name__ == "__main__":
    main()
