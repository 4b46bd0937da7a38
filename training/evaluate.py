"""Offline evaluation (``dms-net-eval``): checkpoint or model bundle + ODIR data -> report.

    dms-net-eval --model runs/dms_s0/best.pt --labels ../shared/data/odir5k_256/labels.csv \
        --split-file training/splits/odir5k_256_val15_seed0.json --subset val --output-dir runs/eval

A bundle directory runs through `dms_net_core.runtime.create_backend` (ONNX Runtime on CPU
by default, like the robot without a GPU); a ``.pt`` checkpoint runs in eager PyTorch
through a small `InferenceBackend` adapter, so both go through `evaluate_pairs`, which
preprocesses with `prepare_eye_uint8` and the model's own `PreprocessConfig` - the node's
path, not the trainer's cache. Writes ``report.json``, ``report.md``, ``probs.npy`` and
plots (per-class ROC, per-class confusion matrices at the model's thresholds, a
reliability diagram), and prints the ODIR official score table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.odir import PatientRecord, labels_matrix, load_odir, select_patients
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, prepare_eye_uint8
from dms_net_core.data.splits import read_split
from dms_net_core.metrics import format_official_table, full_report
from dms_net_core.postprocess import sigmoid
from dms_net_core.runtime.base import InferenceBackend, InferenceResult
from dms_net_core.runtime.inputs import float_pair


class ModuleBackend(InferenceBackend):
    """Eager PyTorch on any ``forward(left, right) -> (logits, att_l, att_r)`` module, behind the runtime interface."""

    name = "torch-module"
    input_forms = ("float32",)  # a bare module has no preprocessing config to normalise with

    def __init__(self, model: Any, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.device = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()

    def infer(self, left: np.ndarray, right: np.ndarray) -> InferenceResult:
        torch = self._torch
        t0 = time.perf_counter()
        with torch.no_grad():
            logits, att_l, att_r = self.model(torch.from_numpy(left).to(self.device), torch.from_numpy(right).to(self.device))
        logits = logits.float().cpu().numpy()
        return InferenceResult(
            probabilities=sigmoid(logits),
            logits=logits,
            attention_left=att_l.float().cpu().numpy(),
            attention_right=att_r.float().cpu().numpy(),
            timings_ms={"inference": (time.perf_counter() - t0) * 1e3},
        )

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


def model_from_checkpoint(checkpoint: dict[str, Any]) -> Any:
    """The trained network of a ``dms-net-train`` checkpoint (never re-downloads ImageNet weights)."""
    from dms_net_core.model import build_model
    from dms_net_core.model.config import DMSNetConfig

    cfg = DMSNetConfig.from_dict(checkpoint["model_config"])
    cfg.pretrained = None  # weights come from the checkpoint
    model = build_model(cfg)
    model.load_state_dict(checkpoint["model"])
    return model.float().eval()


class CheckpointBackend(ModuleBackend):
    """Eager PyTorch on a training checkpoint (``best.pt``), behind the runtime interface."""

    name = "torch-checkpoint"

    def __init__(self, checkpoint: dict[str, Any], device: str = "cpu") -> None:
        super().__init__(model_from_checkpoint(checkpoint), device)


def load_model_source(path: str, backend: str = "onnxruntime", device: str = "cpu") -> tuple[InferenceBackend, PreprocessConfig, np.ndarray, dict[str, Any]]:
    """(backend, preprocess config, thresholds, provenance) for a ``.pt`` or a bundle dir."""
    p = Path(path)
    if p.is_dir():
        from dms_net_core.bundle import ModelBundle
        from dms_net_core.runtime import create_backend

        bundle = ModelBundle.load(p)
        be = create_backend(bundle, backend=backend, device=device)
        return be, bundle.preprocess, np.asarray(bundle.thresholds, np.float32), {"bundle": str(p), "model_id": bundle.model_id, "backend": be.describe()}
    if p.is_file():
        import torch

        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        if "model" not in ckpt or "model_config" not in ckpt:
            raise ValueError(f"{p} is not a dms-net-train checkpoint (no 'model'/'model_config'): pass best.pt or a bundle directory")
        be = CheckpointBackend(ckpt, device=device)
        pre = PreprocessConfig.from_dict(ckpt["preprocess"])
        return be, pre, np.asarray(ckpt.get("thresholds", [0.5] * 8), np.float32), {"checkpoint": str(p), "epoch": ckpt.get("epoch"), "backend": be.describe()}
    raise FileNotFoundError(f"model {p} does not exist: pass a best.pt checkpoint or a model bundle directory")


def evaluate_pairs(backend: InferenceBackend, records: Sequence[PatientRecord], preprocess_cfg: PreprocessConfig,
                   batch_size: int = 16, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run ``backend`` on every patient's pair: returns ``(labels [N,8] uint8, probs [N,8] float32)``.

    Preprocessing is the node's: `prepare_eye_uint8` with ``preprocess_cfg``, handed over as
    prepared uint8 when the backend takes it (normalised by the backend, as in the node) and
    normalised on the host otherwise; reused by the bag tools and the node tests."""
    recs = list(records)
    probs = np.zeros((len(recs), len(CLASS_CODES)), np.float32)
    it = range(0, len(recs), batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="evaluate", leave=False)
    for s in it:
        chunk = recs[s:s + batch_size]
        missing = [r.patient_id for r in chunk if not r.has_both]
        if missing:
            raise ValueError(f"patients {missing[:3]} lack an eye: load the labels with skip_missing_eye=True")
        left = np.stack([prepare_eye_uint8(load_rgb(r.left_path), preprocess_cfg) for r in chunk])
        right = np.stack([prepare_eye_uint8(load_rgb(r.right_path), preprocess_cfg) for r in chunk])
        if "uint8" not in backend.input_forms:
            left, right = float_pair(left, right, preprocess_cfg)
        probs[s:s + len(chunk)] = backend.infer(left, right).probabilities
    return labels_matrix(recs), probs


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
                 provenance: dict[str, Any] | None = None, plots: bool = True, name: str = "model") -> dict[str, Any]:
    """Write report.json / report.md / probs.npy (+ plots) and return the report dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = full_report(labels, probs, thresholds)
    report["provenance"] = provenance or {}
    if plots:
        report["plots"] = _plots(labels, probs, np.asarray(thresholds), out)
    np.save(out / "probs.npy", probs)
    np.save(out / "labels.npy", labels)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    lines = [f"# Evaluation: {name}", "", f"{report['num_patients']} patients. {json.dumps(report['provenance'])}", "",
             "## ODIR-2019 official score (flat, prob > 0.5)", "", format_official_table({name: report["official"]}), "",
             "## Per class (at the model's thresholds)", "",
             "| class | AUC | F1 | sensitivity | specificity | threshold | support |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c, m in report["per_class_at_thresholds"].items():
        lines.append(f"| {c} | {m['auc']:.3f} | {m['f1']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['threshold']:.2f} | {m['support']} |")
    lines += ["", "## Paper columns (averaging in the name)", "", "| metric | at 0.5 | at thresholds |", "|---|---:|---:|"]
    for k, v in report["paper_columns_at_0.5"].items():
        lines.append(f"| {k} | {v:.4f} | {report['paper_columns_at_thresholds'][k]:.4f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a DMS-Net checkpoint or bundle on ODIR data", add_help=add_help)
    p.add_argument("--model", required=True, help="best.pt checkpoint or model bundle directory")
    p.add_argument("--labels", required=True, help="labels.csv or the official ODIR-5K sheet")
    p.add_argument("--images-dir", default=None)
    p.add_argument("--split-file", default=None)
    p.add_argument("--subset", default="val", choices=("train", "val", "test", "all"),
                   help="side of --split-file to score; 'test' = the held-out patients of a 3-way split")
    p.add_argument("--limit", type=int, default=None, help="first N patients only")
    p.add_argument("--backend", default="onnxruntime", help="bundle backend: onnxruntime | tensorrt | torch | auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output-dir", default="runs/eval")
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    try:
        backend, pre, thresholds, prov = load_model_source(args.model, args.backend, args.device)
        records = load_odir(args.labels, args.images_dir).records
        if args.split_file and args.subset != "all":
            split = read_split(args.split_file)
            if args.subset not in split:
                raise ValueError(f"split file {args.split_file} has no {args.subset!r} side (it has {', '.join(split)}): "
                                 "pick one of those with --subset, or make a 3-way split with training.make_split --test-fraction")
            records = select_patients(records, split[args.subset], source=args.split_file)
        if args.limit:
            records = records[: args.limit]
        labels, probs = evaluate_pairs(backend, records, pre, args.batch_size, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prov |= {"labels": args.labels, "split_file": args.split_file, "subset": args.subset}
    report = write_report(labels, probs, thresholds, args.output_dir, provenance=prov, plots=not args.no_plots,
                          name=Path(args.model).name)
    print(format_official_table({Path(args.model).name: report["official"]}))
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    return report


if __name__ == "__main__":
    main()
