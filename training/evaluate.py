"""Offline evaluation (``dms-net-eval``): checkpoint or model bundle + ODIR data -> report.

    dms-net-eval --model runs/dms_s0/best.pt --labels ../shared/data/odir5k_256/labels.csv \
        --split-file training/splits/odir5k_256_val15_seed0.json --subset val --output-dir runs/eval

A bundle directory runs through `dms_net_core.runtime.create_backend` (ONNX Runtime on CPU
by default, like the robot without a GPU); a ``.pt`` checkpoint runs in eager PyTorch
through a small `InferenceBackend` adapter, so both go through `evaluate_pairs`, which runs
each pair through the node's exam pipeline (`dms_net_core.exam_pipeline`: quality grade,
preparation with the model's own `PreprocessConfig`, inference) - the node's path, not the
trainer's cache; pairs the gate would withhold are scored too and counted. Writes the
report of `dms_net_core.report` (``report.json``, ``report.md``, ``probs.npy``, plots;
per-eye AUC against the keyword-derived per-eye labels when the model has per-eye heads)
and prints the ODIR official score table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dms_net_core.checkpoint import (
    checkpoint_epoch,
    checkpoint_preprocess,
    checkpoint_thresholds,
    load_checkpoint,
    model_from_checkpoint,
)
from dms_net_core.classes import NUM_CLASSES
from dms_net_core.data.eye_labels import eye_label_matrices
from dms_net_core.data.odir import PatientRecord, labels_matrix, load_odir, select_patients
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb
from dms_net_core.data.splits import read_split
from dms_net_core.exam_pipeline import ExamPipeline, ExamStatus
from dms_net_core.metrics import format_official_table
from dms_net_core.postprocess import sigmoid
from dms_net_core.report import write_report
from dms_net_core.runtime.base import InferenceBackend, InferenceResult

__all__ = ["CheckpointBackend", "ModuleBackend", "PairPredictions", "evaluate_pairs", "main", "predict_pairs",
           "write_report"]


class ModuleBackend(InferenceBackend):
    """Eager PyTorch on any ``forward(left, right) -> (logits, att_l, att_r[, left_logits, right_logits])``
    module, behind the runtime interface."""

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
            logits, att_l, att_r, *eyes = self.model(torch.from_numpy(left).to(self.device),
                                                     torch.from_numpy(right).to(self.device))
        logits = logits.float().cpu().numpy()
        eye_probs = [sigmoid(e.float().cpu().numpy()) for e in eyes] or [None, None]
        return InferenceResult(
            probabilities=sigmoid(logits),
            logits=logits,
            attention_left=att_l.float().cpu().numpy(),
            attention_right=att_r.float().cpu().numpy(),
            timings_ms={"inference": (time.perf_counter() - t0) * 1e3},
            left_probabilities=eye_probs[0],
            right_probabilities=eye_probs[1],
        )

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


class CheckpointBackend(ModuleBackend):
    """Eager PyTorch on a training checkpoint (``best.pt``), behind the runtime interface."""

    name = "torch-checkpoint"

    def __init__(self, checkpoint: dict[str, Any], device: str = "cpu") -> None:
        super().__init__(model_from_checkpoint(checkpoint), device)


def load_model_source(
    path: str, backend: str = "onnxruntime", device: str = "cpu"
) -> tuple[InferenceBackend, PreprocessConfig, np.ndarray, dict[str, Any]]:
    """(backend, preprocess config, thresholds, provenance) for a ``.pt`` or a bundle dir."""
    p = Path(path)
    if p.is_dir():
        from dms_net_core.bundle import ModelBundle
        from dms_net_core.runtime import create_backend

        bundle = ModelBundle.load(p)
        be = create_backend(bundle, backend=backend, device=device)
        return (be, bundle.preprocess, np.asarray(bundle.thresholds, np.float32),
                {"bundle": str(p), "model_id": bundle.model_id, "backend": be.describe()})
    if p.is_file():
        ckpt = load_checkpoint(p)
        be = CheckpointBackend(ckpt, device=device)
        return (be, checkpoint_preprocess(ckpt), checkpoint_thresholds(ckpt),
                {"checkpoint": str(p), "epoch": checkpoint_epoch(ckpt), "backend": be.describe()})
    raise FileNotFoundError(f"model {p} does not exist: pass a best.pt checkpoint or a model bundle directory")


@dataclass
class PairPredictions:
    """What `predict_pairs` returns: patient labels and probabilities, per-eye labels from the
    keywords (`eye_label_matrices` layout), per-eye probabilities (None without per-eye heads),
    and the patients whose pair the node's quality gate would call UNGRADABLE (scored anyway)."""

    labels: np.ndarray  # [N,8] uint8
    probs: np.ndarray  # [N,8] float32
    eye_labels: dict[str, np.ndarray]
    eye_probs: dict[str, np.ndarray] | None
    ungradable: list[str] = field(default_factory=list)


def evaluate_pairs(backend: InferenceBackend, records: Sequence[PatientRecord], preprocess_cfg: PreprocessConfig,
                   batch_size: int = 16, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`predict_pairs` reduced to ``(labels [N,8] uint8, probs [N,8] float32)``."""
    pred = predict_pairs(backend, records, preprocess_cfg, batch_size, progress)
    return pred.labels, pred.probs


def predict_pairs(backend: InferenceBackend, records: Sequence[PatientRecord], preprocess_cfg: PreprocessConfig,
                  batch_size: int = 16, progress: bool = False) -> PairPredictions:
    """Run every patient's pair through the node's exam pipeline (`dms_net_core.exam_pipeline`:
    quality grade, preparation, ``backend`` in batches) and collect patient and, if present,
    per-eye probabilities. Pairs the gate would withhold are inferred too and listed.

    The pipeline hands the backend prepared uint8 when it takes it (normalised by the
    backend, as in the node) and normalised float32 otherwise; reused by ensembles and tests."""
    recs = list(records)
    missing = [r.patient_id for r in recs if not r.has_both]
    if missing:
        raise ValueError(f"patients {missing[:3]} lack an eye: load the labels with skip_missing_eye=True")
    pipeline = ExamPipeline(backend, preprocess_cfg, infer_ungradable=True)
    probs = np.zeros((len(recs), NUM_CLASSES), np.float32)
    eye_probs: dict[str, np.ndarray] | None = None
    ungradable: list[str] = []
    items = ((i, load_rgb(r.left_path), load_rgb(r.right_path)) for i, r in enumerate(recs))
    results = pipeline.examine_all(items, batch_size)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(recs), desc="evaluate", leave=False)
    for i, result in results:
        if result.probabilities is None:  # inference failed: no number to score
            raise ValueError(f"patient {recs[i].patient_id}: {result.message}")
        probs[i] = result.probabilities
        if result.status is ExamStatus.UNGRADABLE:
            ungradable.append(recs[i].patient_id)
        if result.left_probabilities is not None and result.right_probabilities is not None:
            if eye_probs is None:
                eye_probs = {side: np.zeros((len(recs), NUM_CLASSES), np.float32) for side in ("left", "right")}
            eye_probs["left"][i] = result.left_probabilities
            eye_probs["right"][i] = result.right_probabilities
    eye_labels = eye_label_matrices((r.keywords.get("left"), r.keywords.get("right")) for r in recs)
    return PairPredictions(labels_matrix(recs), probs, eye_labels, eye_probs, ungradable)


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
                raise ValueError(f"split file {args.split_file} has no {args.subset!r} side "
                                 f"(it has {', '.join(split)}): pick one of those with --subset, "
                                 "or make a 3-way split with training.make_split --test-fraction")
            records = select_patients(records, split[args.subset], source=args.split_file)
        if args.limit:
            records = records[: args.limit]
        pred = predict_pairs(backend, records, pre, args.batch_size, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prov |= {"labels": args.labels, "split_file": args.split_file, "subset": args.subset,
             "ungradable_pairs": len(pred.ungradable)}
    report = write_report(pred.labels, pred.probs, thresholds, args.output_dir, provenance=prov,
                          plots=not args.no_plots, name=Path(args.model).name, eye_labels=pred.eye_labels,
                          eye_probs=pred.eye_probs)
    print(format_official_table({Path(args.model).name: report["official"]}))
    per_eye = report["per_eye"]
    if "skipped" in per_eye:
        print(f"per-eye AUC: not reported ({per_eye['skipped']})")
    else:
        print(f"per-eye AUC ({per_eye['eyes']} eyes, keyword labels): "
              f"flat {per_eye['auc']:.4f}, macro {per_eye['macro_auc']:.4f}; "
              + " ".join(f"{c} {v:.3f}" for c, v in per_eye["per_class"].items()))
    if pred.ungradable:
        print(f"{len(pred.ungradable)} of {len(pred.labels)} pairs the node's quality gate would call UNGRADABLE "
              f"(scored anyway): {', '.join(pred.ungradable[:10])}")
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    return report


if __name__ == "__main__":
    main()
