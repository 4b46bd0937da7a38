"""``dms-net-oof``: the out-of-fold score of a k-fold cross-validation, and the numbers the
shipped ensemble of its fold members takes from it (epoch, calibration, thresholds).

    dms-net-oof runs/cpu/cv5_f5_fold{0,1,2,3,4} --hflip-tta --output runs/cpu/cv5_oof.json
    dms-net-ensemble --oof runs/cpu/cv5_oof.json --output models/demo ...

Why: once every labelled patient trains a member, no patient is left to tune or score the
ensemble on except through the folds: each patient is predicted by the one member that never
saw it. Those pooled predictions choose

1. **the epoch count**, one for all folds, from every epoch's snapshot (``--epoch-snapshots``),
   scored with calibration cross-fitted across folds (each fold's offsets fitted on the other
   folds' patients), over the second half of the schedule; each fold's own best epoch would
   be picked on the very patients it is scored on;
2. **the calibration** (`dms_net_core.calibration` logit offsets), kept only when the
   cross-fitted check shows a gain, then fitted on all out-of-fold predictions;
3. **the thresholds** (per-class F1, `tune_thresholds`) on the calibrated predictions.

The reported score is the cross-fitted one (no patient's own label tunes its calibration or
thresholds), with a patient-bootstrap 95 % interval. The chosen epoch's predictions are made
again through the node's exam pipeline from the real images (``--hflip-tta``: mirrored and
averaged, as the shipped bundle runs), not read from the feature bank's stored view.

One caveat stays: the shipped model is the MEAN of the fold members, whose probabilities are
a little smoother than any single member's; offsets and thresholds fitted on single members
carry over approximately (an average of members is no less calibrated than a member).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dms_net_core.calibration import apply_logit_offsets, fit_logit_offsets
from dms_net_core.classes import NORMAL_INDEX
from dms_net_core.metrics import full_report, odir_decision_score, odir_official_score, tune_thresholds
from dms_net_core.postprocess import coherent_positive
from training.epoch_snapshots import epoch_val_probs, snapshot_paths


def cross_fit(labels: list[np.ndarray], probs: list[np.ndarray],
              fit: Callable[[np.ndarray, np.ndarray], Any],
              apply: Callable[[np.ndarray, Any], np.ndarray]) -> list[np.ndarray]:
    """Per fold k: ``apply(probs[k], fit(labels of the other folds, probs of the other folds))``."""
    out = []
    for k in range(len(probs)):
        rest_y = np.concatenate([y for j, y in enumerate(labels) if j != k])
        rest_p = np.concatenate([p for j, p in enumerate(probs) if j != k])
        out.append(apply(probs[k], fit(rest_y, rest_p)))
    return out


def _fit_offsets(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return fit_logit_offsets(y, p)[0]


def cross_fitted_calibrated_score(labels: list[np.ndarray], probs: list[np.ndarray]) -> dict[str, float]:
    """Official score of the pooled predictions, each fold calibrated by offsets fitted on the others."""
    calibrated = cross_fit(labels, probs, _fit_offsets, apply_logit_offsets)
    return odir_official_score(np.concatenate(labels), np.concatenate(calibrated))


def bootstrap_interval(labels: np.ndarray, probs: np.ndarray,
                       score: Callable[[np.ndarray, np.ndarray], dict[str, float]],
                       *, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Patient-bootstrap 95 % interval of every key ``score(labels, probs)`` returns."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        for key, value in score(labels[idx], probs[idx]).items():
            draws.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def epoch_table(fold_dirs: list[Path], labels: list[np.ndarray], *,
                min_fraction: float = 0.5) -> tuple[list[dict[str, Any]], int]:
    """One row per epoch common to every fold (pooled raw score; cross-fitted calibrated score
    from ``min_fraction`` of the schedule on) and the epoch with the best cross-fitted final."""
    per_fold = [epoch_val_probs(d) for d in fold_dirs]
    for d, snaps in zip(fold_dirs, per_fold):
        if not snaps:
            raise ValueError(f"{d} has no epoch snapshots: train the folds with --epoch-snapshots")
    epochs = sorted(set.intersection(*(set(s) for s in per_fold)))
    y = np.concatenate(labels)
    rows, best = [], (-1.0, epochs[-1])
    first_scored = epochs[0] + int(min_fraction * (epochs[-1] - epochs[0] + 1))
    for e in epochs:
        probs = [s[e] for s in per_fold]
        row: dict[str, Any] = {"epoch": e, "raw": odir_official_score(y, np.concatenate(probs))}
        if e >= first_scored:
            row["calibrated_cross_fitted"] = cross_fitted_calibrated_score(labels, probs)
            if row["calibrated_cross_fitted"]["final"] > best[0]:
                best = (row["calibrated_cross_fitted"]["final"], e)
        rows.append(row)
    return rows, best[1]


def _fold_split(run_dir: Path) -> str:
    from dms_net_core.checkpoint import checkpoint_split_file, load_checkpoint

    split = checkpoint_split_file(load_checkpoint(run_dir / "best.pt"))
    if not split or not Path(split).is_file():
        raise ValueError(f"{run_dir}/best.pt names no readable split file ({split!r}): run from the repository root")
    return split


def predict_fold_members(fold_dirs: list[Path], epoch: int, labels_path: str, images_dir: str | None, *,
                         hflip_tta: bool, batch_size: int = 16
                         ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, np.ndarray] | None], list[str]]:
    """(labels, probabilities, per-eye probabilities or None, checkpoint paths) per fold: fold
    k's epoch-``epoch`` member over fold k's validation patients, through the exam pipeline on
    the real images."""
    from dms_net_core.checkpoint import checkpoint_preprocess, load_checkpoint, model_from_checkpoint
    from dms_net_core.data.odir import load_odir, select_patients
    from dms_net_core.data.splits import read_split
    from dms_net_core.model.tta import HorizontalFlipTTA
    from training.evaluate import ModuleBackend, predict_pairs

    records = load_odir(labels_path, images_dir).records
    ys, ps, eyes, members = [], [], [], []
    for d in fold_dirs:
        ckpt_path = snapshot_paths(d, epoch)[1]
        ckpt = load_checkpoint(ckpt_path)
        net = model_from_checkpoint(ckpt)
        if hflip_tta:
            net = HorizontalFlipTTA(net)
        split_file = _fold_split(d)
        recs = select_patients(records, read_split(split_file)["val"], source=split_file)
        pred = predict_pairs(ModuleBackend(net.eval()), recs, checkpoint_preprocess(ckpt), batch_size,
                             progress=sys.stderr.isatty())
        ys.append(pred.labels)
        ps.append(pred.probs)
        eyes.append(pred.eye_probs)
        members.append(str(ckpt_path))
        print(f"dms-net-oof: {d.name} epoch {epoch}: {len(recs)} patients, "
              f"final {odir_official_score(pred.labels, pred.probs)['final']:.4f}", flush=True)
    return ys, ps, eyes, members


def or_rule_probs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The official patient rule applied to per-eye probabilities: a disease if either eye has
    it (1 - (1 - l)(1 - r), eyes taken as independent), N only if both eyes are normal (l * r)."""
    out = 1.0 - (1.0 - left) * (1.0 - right)
    out[:, NORMAL_INDEX] = left[:, NORMAL_INDEX] * right[:, NORMAL_INDEX]
    return out.astype(np.float32)


def or_blend_lever(labels: list[np.ndarray], probs: list[np.ndarray], eyes: list[dict[str, np.ndarray]],
                   weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                   bootstrap: int = 1000) -> dict[str, Any]:
    """Issue 22's lever "patient probability blended with the per-eye OR rule", measured on the
    out-of-fold predictions without training: ``(1 - w) p_patient + w p_or`` for each ``w``,
    scored like the shipped recipe (calibration cross-fitted across folds). The best ``w``
    against ``w = 0`` gets a paired patient-bootstrap interval of the difference, and the
    weight each fold would pick from the other folds alone shows whether the choice is stable."""
    y = np.concatenate(labels)
    blended = {w: [(1 - w) * p + w * or_rule_probs(e["left"], e["right"]) for p, e in zip(probs, eyes)]
               for w in weights}
    calibrated = {w: np.concatenate(cross_fit(labels, parts, _fit_offsets, apply_logit_offsets))
                  for w, parts in blended.items()}
    rows = [{"weight": w, "calibrated_cross_fitted": odir_official_score(y, calibrated[w])} for w in weights]
    best = max(weights, key=lambda w: odir_official_score(y, calibrated[w])["final"])
    rng = np.random.default_rng(2)
    diffs = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(odir_official_score(y[idx], calibrated[best][idx])["final"]
                     - odir_official_score(y[idx], calibrated[0.0][idx])["final"])
    return {"weights": rows, "best_weight": best,
            "gain_over_patient_head": float(np.mean(diffs)),
            "gain_ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}


def oof_summary(labels: list[np.ndarray], probs: list[np.ndarray], *, bootstrap: int = 1000) -> dict[str, Any]:
    """The out-of-fold record: raw and cross-fitted calibrated scores with intervals, whether
    calibration is kept, the offsets and thresholds fitted on all folds, and the decision score
    (coherent rule, cross-fitted thresholds)."""
    y, raw = np.concatenate(labels), np.concatenate(probs)
    calibrated_parts = cross_fit(labels, probs, _fit_offsets, apply_logit_offsets)
    calibrated = np.concatenate(calibrated_parts)
    raw_score, cal_score = odir_official_score(y, raw), odir_official_score(y, calibrated)
    keep = cal_score["final"] > raw_score["final"]
    offsets = _fit_offsets(y, raw) if keep else np.zeros(raw.shape[1], np.float32)
    honest_parts = calibrated_parts if keep else list(probs)
    honest = np.concatenate(honest_parts)
    # decisions: thresholds cross-fitted too, then the coherent rule
    thresholds_cf = cross_fit(labels, honest_parts, tune_thresholds, lambda p, t: t)
    decisions = np.concatenate([coherent_positive(p, t) for p, t in zip(honest_parts, thresholds_cf)])
    uncoherent = np.concatenate([p > t for p, t in zip(honest_parts, thresholds_cf)])
    shipped = apply_logit_offsets(raw, offsets) if keep else raw
    thresholds = tune_thresholds(y, shipped)
    return {
        "patients": int(len(y)), "folds": len(labels),
        "raw": raw_score, "raw_ci95": bootstrap_interval(y, raw, odir_official_score, n=bootstrap),
        "calibrated_cross_fitted": cal_score,
        "calibration_applied": bool(keep),
        "score": odir_official_score(y, honest),
        "score_ci95": bootstrap_interval(y, honest, odir_official_score, n=bootstrap, seed=1),
        "score_is": "official ODIR at p > 0.5 of the pooled out-of-fold predictions"
                    + (", each fold calibrated by offsets fitted on the other folds" if keep else ", uncalibrated"),
        "decisions_cross_fitted": {
            "coherent": odir_decision_score(y, honest, decisions),
            "without_rule": odir_decision_score(y, honest, uncoherent),
            "normal_with_disease_without_rule": int((uncoherent[:, 0] & uncoherent[:, 1:].any(1)).sum()),
        },
        "logit_offsets": [float(b) for b in offsets],
        "thresholds": [float(t) for t in thresholds],
        # the report model.json carries: the honest (cross-fitted) probabilities; its threshold
        # columns use the thresholds fitted on all folds, the ones the bundle ships
        "report": full_report(y, honest, thresholds),
    }


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Out-of-fold score, epoch, calibration and thresholds of a k-fold CV",
                                add_help=add_help)
    p.add_argument("fold_dirs", nargs="+", type=Path, help="the folds' --output-dir (trained with --epoch-snapshots)")
    p.add_argument("--output", "-o", type=Path, required=True, help="JSON to write (dms-net-ensemble --oof reads it)")
    p.add_argument("--labels", default=None, help="labels.csv (default: the ODIR-5K 256 px set's)")
    p.add_argument("--images-dir", default=None)
    p.add_argument("--epoch", type=int, default=None, help="use this epoch instead of choosing one")
    p.add_argument("--hflip-tta", action="store_true",
                   help="predict as the shipped bundle will: pair + mirror averaged")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95 %% intervals")
    p.add_argument("--batch-size", type=int, default=16)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from training.paths import default_odir_dir

    try:
        if len(args.fold_dirs) < 2:
            raise ValueError("an out-of-fold score needs two or more folds")
        fold_labels = []
        for d in args.fold_dirs:
            if not (d / "val_labels.npy").is_file():
                raise ValueError(f"{d} has no val_labels.npy: the fold has not finished (resume its training)")
            fold_labels.append(np.load(d / "val_labels.npy"))
        table, chosen = epoch_table(args.fold_dirs, fold_labels)
        epoch = chosen if args.epoch is None else args.epoch
        print(f"dms-net-oof: epoch {epoch} "
              f"({'chosen on the cross-fitted calibrated score' if args.epoch is None else '--epoch'})")
        labels_path = args.labels or str(default_odir_dir() / "labels.csv")
        ys, ps, eyes, members = predict_fold_members(args.fold_dirs, epoch, labels_path, args.images_dir,
                                               hflip_tta=args.hflip_tta, batch_size=args.batch_size)
        for y, stored in zip(ys, fold_labels):
            if not np.array_equal(y, stored):
                raise ValueError("the fold's validation labels changed since training: "
                                 "same labels.csv and split files needed")
        summary = oof_summary(ys, ps, bootstrap=args.bootstrap)
        if all(e is not None for e in eyes):
            summary["lever_or_blend"] = or_blend_lever(ys, ps, eyes, bootstrap=args.bootstrap)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-oof: error: {exc}", file=sys.stderr)
        return 2
    record = {"epoch": epoch, "epoch_chosen_by": "--epoch" if args.epoch is not None else
              "max cross-fitted calibrated out-of-fold final over the second half of the schedule",
              "hflip_tta": bool(args.hflip_tta), "members": members, **summary, "epochs": table}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1, default=float) + "\n")
    arrays = {f"fold{k}_{name}": a for k, (y, p) in enumerate(zip(ys, ps)) for name, a in (("labels", y), ("probs", p))}
    arrays |= {f"fold{k}_{side}_eye_probs": e[side]
               for k, e in enumerate(eyes) if e is not None for side in ("left", "right")}
    np.savez_compressed(args.output.with_suffix(".npz"), **arrays)  # the predictions, for later analysis
    s, ci = summary["score"], summary["score_ci95"]["final"]
    print(f"dms-net-oof: {summary['patients']} patients out of fold: ODIR final {s['final']:.4f} "
          f"[{ci[0]:.4f}, {ci[1]:.4f}] (kappa {s['kappa']:.4f}, F1 {s['f1']:.4f}, AUC {s['auc']:.4f}); "
          f"calibration {'kept' if summary['calibration_applied'] else 'not kept'}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
