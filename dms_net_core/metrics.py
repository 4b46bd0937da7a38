"""ODIR-2019 official score, per-class metrics, the paper's six columns, threshold tuning.

numpy + scipy only (no torch), so the evaluator, the bag tools and the node tests
share one definition of every number we report.

The official score (ODIR-2019 challenge evaluation script, as DESIGN.md "Metrics" states):
flatten the N x 8 label and probability matrices into vectors of N*8 elements;

- kappa = Cohen's kappa between the flat labels and ``prob > 0.5`` (STRICTLY greater:
  a probability of exactly 0.5 counts as negative);
- F1    = micro-averaged F1 of the same binarisation. On flat binary vectors the challenge
  script calls ``f1_score(..., average="micro")`` which, for a two-class problem, equals
  element accuracy; we reproduce that exactly (so predicting all zeros scores ~0.86 on
  ODIR's prevalence; compare models on kappa and AUC);
- AUC   = ROC AUC of the flat probabilities;
- final = (kappa + F1 + AUC) / 3.

The DMS-Net paper's columns (Acc, Precision, Recall, Kappa, F1, AUC) are reported with the
averaging named in each key, because the paper does not say which averaging it used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from dms_net_core.classes import CLASS_CODES, NORMAL_INDEX, NUM_CLASSES
from dms_net_core.postprocess import coherent_positive

#: The official score binarises at this value with a STRICT ">".
OFFICIAL_THRESHOLD = 0.5


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    if p.ndim == 1:
        p = p[None]
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in shape: "
                         f"pass N x {NUM_CLASSES} matrices in CLASS_CODES order")
    if y.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} class columns ({''.join(CLASS_CODES)}), got {y.shape[1]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1: binarise the label matrix first")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN/inf: check the model output (diverged training?)")
    return y.astype(np.int64), p


def _safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (undefined, not 0.5).

    The Mann-Whitney form on average ranks (ties count one half), equal to scikit-learn's
    ``roc_auc_score`` to float rounding (`test_metrics` holds it) but about 20x faster: the
    calibration fit and the out-of-fold epoch table score thousands of trial matrices."""
    if y.min() == y.max():
        return float("nan")
    positive = np.asarray(y).reshape(-1) == 1
    ranks = rankdata(np.asarray(p, dtype=np.float64).reshape(-1), method="average")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _safe_kappa(y: np.ndarray, pred: np.ndarray) -> float:
    """Cohen's kappa of two 0/1 vectors from their 2x2 counts (scikit-learn's
    ``cohen_kappa_score`` to float rounding, without its per-call overhead). Both vectors
    constant and identical is perfect agreement with no chance correction possible: 1.0."""
    y = np.asarray(y).reshape(-1).astype(bool)
    pred = np.asarray(pred).reshape(-1).astype(bool)
    if y.min() == y.max() and pred.min() == pred.max():
        return 1.0 if y[0] == pred[0] else 0.0
    n = float(y.size)
    tp = float((y & pred).sum())
    tn = float((~y & ~pred).sum())
    yes_y, yes_p = float(y.sum()), float(pred.sum())
    observed = (tp + tn) / n
    expected = (yes_y * yes_p + (n - yes_y) * (n - yes_p)) / (n * n)
    return float((observed - expected) / (1.0 - expected))


def _flat_micro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """``f1_score(y, pred, average="micro")`` of two flat 0/1 vectors, which is their
    element accuracy (see the module doc)."""
    return float((np.asarray(y).reshape(-1) == np.asarray(pred).reshape(-1)).mean())


def odir_official_score(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The ODIR-2019 challenge score: ``{"kappa", "f1", "auc", "final"}`` (see module doc)."""
    y, p = _check(labels, probs)
    y_flat = y.reshape(-1)
    p_flat = p.reshape(-1)
    pred = (p_flat > OFFICIAL_THRESHOLD).astype(np.int64)
    kappa = _safe_kappa(y_flat, pred)
    f1 = _flat_micro_f1(y_flat, pred)
    auc = _safe_auc(y_flat, p_flat)
    return {"kappa": kappa, "f1": f1, "auc": auc, "final": float((kappa + f1 + auc) / 3.0)}


def _normal_with_disease(positive: np.ndarray) -> int:
    """Patients whose thresholded classes say "normal" and a disease at once."""
    return int((positive[:, NORMAL_INDEX] & np.delete(positive, NORMAL_INDEX, axis=1).any(1)).sum())


def odir_decision_score(labels: np.ndarray, probs: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """The official formula on the product's own decisions: kappa and micro-F1 from
    ``positives`` (e.g. `dms_net_core.postprocess.coherent_positive`), AUC from ``probs``
    (a ranking, which no threshold rule changes). Equal to `odir_official_score` when
    ``positives == probs > 0.5``."""
    y, p = _check(labels, probs)
    pred = np.asarray(positives).reshape(-1).astype(np.int64)
    if pred.size != y.size:
        raise ValueError(f"{pred.size} decisions for {y.size} labels: pass one row of positives per patient")
    y_flat = y.reshape(-1)
    kappa = _safe_kappa(y_flat, pred)
    f1 = _flat_micro_f1(y_flat, pred)
    auc = _safe_auc(y_flat, p.reshape(-1))
    return {"kappa": kappa, "f1": f1, "auc": auc, "final": float((kappa + f1 + auc) / 3.0)}


def _binary_counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(((y == 1) & (pred == 1)).sum())
    fp = int(((y == 0) & (pred == 1)).sum())
    fn = int(((y == 1) & (pred == 0)).sum())
    tn = int(((y == 0) & (pred == 0)).sum())
    return tp, fp, fn, tn


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def per_class_metrics(labels: np.ndarray, probs: np.ndarray,
                      thresholds: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per class (keyed by code): auc, f1, precision, sensitivity, specificity, prevalence,
    support, threshold; positives are ``prob > threshold`` (default 0.5, strict)."""
    y, p = _check(labels, probs)
    t = (np.full(NUM_CLASSES, OFFICIAL_THRESHOLD) if thresholds is None
         else np.asarray(thresholds, dtype=np.float64).reshape(-1))
    out: dict[str, dict[str, float]] = {}
    for k, code in enumerate(CLASS_CODES):
        pred = (p[:, k] > t[k]).astype(np.int64)
        tp, fp, fn, tn = _binary_counts(y[:, k], pred)
        precision = _div(tp, tp + fp)
        sensitivity = _div(tp, tp + fn)
        out[code] = {
            "auc": _safe_auc(y[:, k], p[:, k]),
            "f1": _div(2 * precision * sensitivity, precision + sensitivity),
            "precision": precision,
            "sensitivity": sensitivity,
            "specificity": _div(tn, tn + fp),
            "prevalence": float(y[:, k].mean()) if len(y) else 0.0,
            "support": int(y[:, k].sum()),
            "threshold": float(t[k]),
        }
    return out


def paper_columns(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, float]:
    """The DMS-Net paper's six columns, each with its averaging in the key name.

    - ``acc_element``: share of the N*8 label cells predicted right (= official F1);
    - ``acc_exact_match``: share of patients whose whole label set is right;
    - ``precision/recall/f1`` ``_macro`` (mean over classes) and ``_micro`` (pooled cells);
    - ``kappa_flat`` (official kappa at the given thresholds) and ``kappa_macro``;
    - ``auc_macro`` (mean per-class AUC) and ``auc_flat`` (official AUC).
    """
    y, p = _check(labels, probs)
    t = (np.full(NUM_CLASSES, OFFICIAL_THRESHOLD) if thresholds is None
         else np.asarray(thresholds, dtype=np.float64).reshape(-1))
    pred = (p > t[None, :]).astype(np.int64)
    tp, fp, fn, tn = _binary_counts(y.reshape(-1), pred.reshape(-1))
    per = per_class_metrics(y, p, t)
    kappas = [_safe_kappa(y[:, k], pred[:, k]) for k in range(NUM_CLASSES)]
    aucs = [v["auc"] for v in per.values() if not np.isnan(v["auc"])]
    p_micro, r_micro = _div(tp, tp + fp), _div(tp, tp + fn)
    return {
        "acc_element": _div(tp + tn, tp + fp + fn + tn),
        "acc_exact_match": float((pred == y).all(axis=1).mean()) if len(y) else 0.0,
        "precision_macro": float(np.mean([v["precision"] for v in per.values()])),
        "precision_micro": p_micro,
        "recall_macro": float(np.mean([v["sensitivity"] for v in per.values()])),
        "recall_micro": r_micro,
        "f1_macro": float(np.mean([v["f1"] for v in per.values()])),
        "f1_micro": _div(2 * p_micro * r_micro, p_micro + r_micro),
        "kappa_flat": _safe_kappa(y.reshape(-1), pred.reshape(-1)),
        "kappa_macro": float(np.mean(kappas)),
        "auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "auc_flat": _safe_auc(y.reshape(-1), p.reshape(-1)),
    }


def tune_thresholds(labels: np.ndarray, probs: np.ndarray, *, grid: np.ndarray | None = None,
                    default: float = OFFICIAL_THRESHOLD) -> np.ndarray:
    """Per-class decision thresholds that MAXIMISE PER-CLASS F1 on validation data.

    Why F1 and not Youden's J: on rare classes (H ~3%) Youden's J picks thresholds with
    high sensitivity and a flood of false positives (it weighs specificity on thousands of
    negatives like sensitivity on a few dozen positives); F1 balances precision and recall
    of the positive class, which is what a referral list needs. The rule is positive iff
    ``prob > threshold`` (strict, like `decide`). Ties keep the threshold closest to 0.5;
    a class without positives in the data keeps ``default``. Returns float32[8].
    """
    y, p = _check(labels, probs)
    grid = np.linspace(0.02, 0.98, 49) if grid is None else np.asarray(grid, dtype=np.float64)
    out = np.full(NUM_CLASSES, default, dtype=np.float32)
    for k in range(NUM_CLASSES):
        yk = y[:, k]
        if yk.sum() == 0:
            continue
        best_f1, best_t = -1.0, default
        for t in grid:
            pred = p[:, k] > t
            tp = int((pred & (yk == 1)).sum())
            denom = int(pred.sum()) + int(yk.sum())
            f1 = 2.0 * tp / denom if denom else 0.0
            if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
                best_f1, best_t = f1, float(t)
        out[k] = best_t
    return out


def tune_decision_thresholds(labels: np.ndarray, probs: np.ndarray, start: np.ndarray | None = None, *,
                             grid: np.ndarray | None = None, sweeps: int = 2) -> np.ndarray:
    """Thresholds that maximise the official formula on the product's own decisions
    (`odir_decision_score` of `coherent_positive`), by coordinate ascent from ``start``
    (default: `tune_thresholds`' per-class F1 optimum).

    Why: per-class F1 tunes each class alone, but the coherence rule couples them (a low
    disease threshold clears N on patients who are normal); tuning under the rule lets every
    threshold see what the decision does with it. Ties keep the current value. float32[8]."""
    y, p = _check(labels, probs)
    grid = np.linspace(0.02, 0.98, 49) if grid is None else np.asarray(grid, dtype=np.float64)
    t = (tune_thresholds(y, p) if start is None else np.asarray(start, np.float32)).astype(np.float32).copy()

    def score(th: np.ndarray) -> float:
        return odir_decision_score(y, p, coherent_positive(p, th))["final"]

    best = score(t)
    for _ in range(sweeps):
        changed = False
        for k in range(NUM_CLASSES):
            if y[:, k].min() == y[:, k].max():
                continue
            for g in grid:
                trial = t.copy()
                trial[k] = g
                value = score(trial)
                if value > best + 1e-12:
                    best, t, changed = value, trial, True
        if not changed:
            break
    return t


def full_report(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """Everything we report for one evaluation: official score (always at 0.5), the
    paper's columns and per-class metrics at 0.5 and at the tuned ``thresholds``."""
    y, p = _check(labels, probs)
    report: dict[str, Any] = {
        "num_patients": int(len(y)),
        "official": odir_official_score(y, p),
        "paper_columns_at_0.5": paper_columns(y, p),
        "per_class_at_0.5": per_class_metrics(y, p),
    }
    if thresholds is not None:
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        report["thresholds"] = [float(v) for v in t]
        report["paper_columns_at_thresholds"] = paper_columns(y, p, t)
        report["per_class_at_thresholds"] = per_class_metrics(y, p, t)
        # what the product prints: the tuned thresholds with the coherence rule (N never with a disease)
        report["decisions"] = {"rule": "p > threshold; N only when no disease is positive",
                               "at_thresholds": odir_decision_score(y, p, coherent_positive(p, t)),
                               "at_thresholds_without_rule": odir_decision_score(y, p, p > t),
                               "at_0.5": odir_decision_score(y, p, coherent_positive(p, OFFICIAL_THRESHOLD)),
                               "normal_with_disease_without_rule": _normal_with_disease(p > t)}
    return report


def format_official_table(scores: dict[str, dict[str, float]]) -> str:
    """Markdown table ``| run | kappa | F1 | AUC | final |`` from ``{name: official_score}``."""
    lines = ["| run | kappa | F1 (elem. acc.) | AUC | final |", "|---|---:|---:|---:|---:|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s['kappa']:.4f} | {s['f1']:.4f} | {s['auc']:.4f} | {s['final']:.4f} |")
    return "\n".join(lines)


def per_eye_auc(eye_labels: dict[str, np.ndarray], eye_probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """How well per-eye probabilities find each eye's own findings.

    ``eye_labels``: ``left``/``right`` 0/1 [N,8] and ``left_known``/``right_known`` bool [N]
    (keyword-derived, `dms_net_core.data.eye_labels`); ``eye_probs``: ``left``/``right`` [N,8].
    Both eyes of every patient with a known per-eye label are pooled (2N eyes at most).
    Returns ``{"eyes": count, "auc": flat AUC over eyes x classes, "macro_auc": mean of
    the defined per-class AUCs, "per_class": {code: AUC or NaN}}``."""
    ys, ps = [], []
    for side in ("left", "right"):
        known = np.asarray(eye_labels[f"{side}_known"], dtype=bool)
        y, p = _check(np.asarray(eye_labels[side])[known], np.asarray(eye_probs[side])[known])
        ys.append(y)
        ps.append(p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    per_class = {code: _safe_auc(y[:, c], p[:, c]) if len(y) else float("nan") for c, code in enumerate(CLASS_CODES)}
    defined = [v for v in per_class.values() if np.isfinite(v)]
    return {
        "eyes": int(len(y)),
        "auc": _safe_auc(y.reshape(-1), p.reshape(-1)) if len(y) else float("nan"),
        "macro_auc": float(np.mean(defined)) if defined else float("nan"),
        "per_class": per_class,
    }
