"""The evaluation report every tool writes: ``dms-net-eval``, ``dms-net-bag evaluate`` and ``replay``.

One writer in `dms_net_core` (no ROS, no training code) so a robot install without
``training/`` writes the same report as a workstation: ``report.json`` (the ODIR official
score, per-class metrics, the paper's columns, and per-eye AUC when the model has per-eye
heads and the labels carry per-eye keywords), ``report.md``, ``probs.npy``/``labels.npy``
(and ``eye_probs.npz``), and plots when matplotlib is installed (per-class ROC, confusion
matrices at the model's thresholds, a reliability diagram). Without matplotlib the numbers
are identical and ``report.json`` says the plots were skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.json_safe import json_default


def _plots(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    files = []
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    for k, ax in enumerate(axes.flat):
        if labels[:, k].min() != labels[:, k].max():
            fpr, tpr, _ = roc_curve(labels[:, k], probs[:, k])
            ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(CLASS_CODES[k])
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
    fig.tight_layout()
    fig.savefig(out / "roc_per_class.png", dpi=90)
    plt.close(fig)
    files.append("roc_per_class.png")

    fig, axes = plt.subplots(2, 4, figsize=(12, 6.5))
    for k, ax in enumerate(axes.flat):
        pred = probs[:, k] > thresholds[k]
        y = labels[:, k].astype(bool)
        cm = np.array([[(~y & ~pred).sum(), (~y & pred).sum()], [(y & ~pred).sum(), (y & pred).sum()]])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["pred -", "pred +"])
        ax.set_yticks([0, 1], ["true -", "true +"])
        ax.set_title(f"{CLASS_CODES[k]} (t={thresholds[k]:.2f})")
    fig.tight_layout()
    fig.savefig(out / "confusion_per_class.png", dpi=90)
    plt.close(fig)
    files.append("confusion_per_class.png")

    bins = np.linspace(0, 1, 11)
    p, y = probs.reshape(-1), labels.reshape(-1)
    which = np.clip(np.digitize(p, bins) - 1, 0, 9)
    conf = [p[which == b].mean() if (which == b).any() else np.nan for b in range(10)]
    acc = [y[which == b].mean() if (which == b).any() else np.nan for b in range(10)]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot(conf, acc, "o-")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title("reliability (all classes, flat)")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=90)
    plt.close(fig)
    files.append("reliability.png")
    return files


def write_report(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, out_dir: str | Path, *,
                 provenance: dict[str, Any] | None = None, plots: bool = True, name: str = "model",
                 eye_labels: dict[str, np.ndarray] | None = None,
                 eye_probs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Write report.json / report.md / probs.npy (+ plots) and return the report dict.

    ``eye_labels`` (keyword-derived, `dms_net_core.data.eye_labels` layout with ``*_known``)
    and ``eye_probs`` (``left``/``right`` [N,8]) add the per-eye AUC section; either
    missing means the model or the labels have no per-eye information, and the report says so."""
    from dms_net_core.metrics import full_report, per_eye_auc  # scikit-learn: an evaluation dependency

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = full_report(labels, probs, thresholds)
    report["provenance"] = provenance or {}
    if eye_labels is not None and eye_probs is not None:
        report["per_eye"] = per_eye_auc(eye_labels, eye_probs)
        np.savez(out / "eye_probs.npz", **{f"probs_{k}": v for k, v in eye_probs.items()},
                 **{f"labels_{k}": v for k, v in eye_labels.items()})
    else:
        report["per_eye"] = {"skipped": "the model has no per-eye heads" if eye_probs is None
                             else "no per-eye labels (keywords)"}
    if plots:
        try:
            report["plots"] = _plots(labels, probs, np.asarray(thresholds), out)
        except ImportError as err:
            report["plots"] = {"skipped": f"matplotlib not installed ({err}); pip install matplotlib for plots"}
    np.save(out / "probs.npy", probs)
    np.save(out / "labels.npy", labels)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    from dms_net_core.metrics import format_official_table

    lines = [f"# Evaluation: {name}", "", f"{report['num_patients']} patients. {json.dumps(report['provenance'])}", "",
             "## ODIR-2019 official score (flat, prob > 0.5)", "", format_official_table({name: report["official"]}),
             "", "## Per class (at the model's thresholds)", "",
             "| class | AUC | F1 | sensitivity | specificity | threshold | support |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c, m in report["per_class_at_thresholds"].items():
        lines.append(f"| {c} | {m['auc']:.3f} | {m['f1']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} "
                     f"| {m['threshold']:.2f} | {m['support']} |")
    lines += ["", "## Paper columns (averaging in the name)", "", "| metric | at 0.5 | at thresholds |",
              "|---|---:|---:|"]
    for k, v in report["paper_columns_at_0.5"].items():
        lines.append(f"| {k} | {v:.4f} | {report['paper_columns_at_thresholds'][k]:.4f} |")
    lines += ["", "## Per eye (each eye's own probability against its keyword-derived labels)", ""]
    per_eye = report["per_eye"]
    if "skipped" in per_eye:
        lines.append(f"not reported: {per_eye['skipped']}")
    else:
        lines += [f"{per_eye['eyes']} eyes with a per-eye label; "
                  f"flat AUC {per_eye['auc']:.4f}, macro AUC {per_eye['macro_auc']:.4f}", "",
                  "| class | " + " | ".join(CLASS_CODES) + " |", "|---|" + "---:|" * len(CLASS_CODES),
                  "| AUC | " + " | ".join(f"{per_eye['per_class'][c]:.3f}" for c in CLASS_CODES) + " |"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report
