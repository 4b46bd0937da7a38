"""What DMS-Net's heads cost on a GPU, measured against the plain control in ONE process.

Issue 15's target: one DMS-Net pair at most 1.2x the plain binocular control's time with the
same backbone and backend, and batch-32 throughput not lower than before the heads were
rewritten. GPU rows are only comparable within one run (two H200 leases gave 6.00 and 5.36 ms
for the same row), so every model this needs is timed here, one after the other, through the
same `dms-net-bench` machinery (the torch backend as the node runs it: prepared uint8 eyes in,
BatchNorm folded, host probabilities and attention maps out):

    dms                DMS-Net as served today (issue 15's heads)
    dms-reference      the same bundle and weights with the pre-issue-15 heads
                       (`dms_net_core.model.reference_heads`): before/after in one process
    dms-no-attention   DMS-Net with the attention maps left out of the output copy
                       (the torch backend's attention_outputs=False, for a node without overlays)
    control            the plain binocular control with the same backbone (its own bundle)
    backbone           the bare backbone on both eyes: the control's bundle with its head
                       replaced by the least the serving path accepts (`BackboneOnly`)

Rows run in the order given (most important first); a row that would start after
``--time-budget-s`` is listed as skipped, and the table file is rewritten after every row, so
a call cut short keeps what it measured. The summary gives DMS-Net / control at batch 1 and
DMS-Net today / before at batch 32 for each backend.

    python -m benchmarks.heads_overhead --device cuda --backbone resnet152 --image-size 448 \\
        --batch-sizes 32 --output heads_overhead.md              # the GPU run (scripts/gpu_job.sh)
    python -m benchmarks.heads_overhead --device cpu --backbone tiny --image-size 64 \\
        --rows dms:torch-fp32,control:torch-fp32,dms-reference:torch-fp32,backbone:torch-fp32 \\
        --batch-sizes 4 --iterations 3 --throughput-iterations 1    # CPU dry run of the flow
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.bench_backends import VARIANTS, Row, bench_variant, machine_description, make_bundle
from dms_net_core.model import build_model
from dms_net_core.model.baseline import PlainBinocularNet
from dms_net_core.model.layers import ones_attention


class BackboneOnly(PlainBinocularNet):
    """The control's backbone alone, run once on both eyes, with the smallest outputs the serving
    path unpacks: the left eye's pooled features (first K channels) as "logits" and all-ones maps.
    A subclass, so the control bundle's weights load by their own names."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone(torch.cat([left, right], dim=0))
        first = features[: left.shape[0]]
        ones = ones_attention(first)
        return first.mean(dim=(2, 3))[:, : self.config.num_classes], ones, ones


@dataclass(frozen=True)
class ModelForm:
    """One model as a row: which bundle, and what the backend gets on top of the variant's options."""

    label: str
    architecture: str
    options: dict[str, Any]


MODEL_FORMS: dict[str, ModelForm] = {
    "dms": ModelForm("DMS-Net", "dms_net", {}),
    "dms-reference": ModelForm("DMS-Net, pre-issue-15 heads", "dms_net",
                               {"model_factory": functools.partial(build_model, reference_heads=True)}),
    "dms-no-attention": ModelForm("DMS-Net, attention maps not copied out", "dms_net", {"attention_outputs": False}),
    "control": ModelForm("plain control", "plain_binocular", {}),
    "backbone": ModelForm("bare backbone, both eyes", "plain_binocular", {"model_factory": BackboneOnly}),
}
BEST = "torch-fp16-compile-cudagraphs"  # the best one-pair backend measured so far (3.19 ms for DMS-Net)
GRAPH = "torch-fp16-cudagraph"  # no Inductor fusion: every op is a kernel, what heads_breakdown.py counts
# Inductor freezing also folds parameter-only branches (CASFM's positions)
FROZEN = "torch-fp16-compile-frozen-cudagraphs"
DEFAULT_ROWS = (
    f"dms:{BEST},control:{BEST},dms-reference:{BEST},dms:{GRAPH},control:{GRAPH},dms-reference:{GRAPH},"
    f"backbone:{BEST},dms:{FROZEN},control:{FROZEN},backbone:{GRAPH},dms-no-attention:{BEST}"
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DMS-Net vs the plain control vs the bare backbone, one process (issue 15)")
    p.add_argument("--backbone", default="resnet152")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--rows", default=DEFAULT_ROWS,
                   help=f"comma list of MODEL:BACKEND in priority order; models {', '.join(MODEL_FORMS)}; "
                   "backends from dms-net-bench")
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--iterations", type=int, default=100, help="batch-1 timed iterations")
    p.add_argument("--throughput-iterations", type=int, default=20, help="timed batches per batch size")
    p.add_argument("--batch-sizes", default="32")
    p.add_argument("--time-budget-s", type=float, default=None, help="start no row after this many seconds")
    p.add_argument("--save-bundles", type=Path, default=None,
                   help="keep the random-weight bundles here (DIR/dms_net, DIR/plain_binocular)")
    p.add_argument("--output", type=Path, default=None, help="also write the table here (rewritten after every row)")
    return p


def parse_rows(text: str) -> list[tuple[str, str]]:
    rows = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        model, _, backend = entry.partition(":")
        if model not in MODEL_FORMS or backend not in VARIANTS:
            raise ValueError(f"row {entry!r}: use MODEL:BACKEND with MODEL in {', '.join(MODEL_FORMS)} "
                             "and a dms-net-bench backend")
        rows.append((model, backend))
    return rows


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if value and reference else "-"


def render(results: list[tuple[str, Row]], skipped: list[str], machine: str, model_line: str, batch: int) -> str:
    control = {row.variant: row for key, row in results if key == "control" and not row.skipped}
    before = {row.variant: row for key, row in results if key == "dms-reference" and not row.skipped}
    lines = [
        "# DMS-Net heads overhead (issue 15): one process, same backend per column group",
        "",
        f"Machine: {machine}",
        "",
        f"Model: {model_line}",
        "",
        f"| model | backend | batch-1 p50 ms | p95 ms | p50 / control | pairs/s @ {batch} | / control "
        "| / pre-issue-15 DMS-Net | start-up s | details |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, row in results:
        if row.skipped:
            skipped.append(f"{MODEL_FORMS[key].label} / {row.variant}: {row.skipped}")
            continue
        ref, old = control.get(row.variant), before.get(row.variant)
        tp = row.throughput.get(batch)
        lines.append(
            f"| {MODEL_FORMS[key].label} | {row.variant} | {row.p50_ms:.2f} | {row.p95_ms:.2f} | "
            f"{_ratio(row.p50_ms, ref.p50_ms if ref else None)} | {f'{tp:.1f}' if tp else '-'} | "
            f"{_ratio(tp, ref.throughput.get(batch) if ref else None)} | "
            f"{_ratio(tp, old.throughput.get(batch) if old and key.startswith('dms') else None)} | "
            f"{row.startup_s:.1f} | {row.describe} |"
        )
    summary = []
    for key, row in results:
        if key == "dms" and not row.skipped:
            ref, old = control.get(row.variant), before.get(row.variant)
            if ref:
                summary.append(f"- {row.variant}: DMS-Net / control at batch 1 = {row.p50_ms / ref.p50_ms:.2f} "
                               f"({row.p50_ms:.2f} vs {ref.p50_ms:.2f} ms; target <= 1.20)")
            if old:
                summary.append(f"- {row.variant}: DMS-Net batch 1 {row.p50_ms:.2f} ms vs {old.p50_ms:.2f} ms "
                               "with the pre-issue-15 heads")
                if row.throughput.get(batch) and old.throughput.get(batch):
                    summary.append(f"- {row.variant}: batch-{batch} throughput {row.throughput[batch]:.1f} "
                                   f"vs {old.throughput[batch]:.1f} pairs/s before "
                                   f"({row.throughput[batch] / old.throughput[batch]:.2f}x; target >= 1.00)")
    lines += ["", "Summary:", "", *(summary or ["- (the rows needed for a ratio did not run)"])]
    if skipped:
        lines += ["", "Skipped:", "", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    start = time.monotonic()
    try:
        rows = parse_rows(args.rows)
    except ValueError as exc:
        print(f"heads_overhead: error: {exc}", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("heads_overhead: error: --device cuda but no CUDA GPU is visible to torch", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    machine = machine_description(cuda)
    with tempfile.TemporaryDirectory(prefix="dms-heads-") as tmp:
        root = args.save_bundles or Path(tmp)
        bundles: dict[str, Any] = {}

        def bundle_for(architecture: str) -> Any:
            if architecture not in bundles:
                t0 = time.perf_counter()
                spec = SimpleNamespace(architecture=architecture, backbone=args.backbone, image_size=args.image_size)
                bundles[architecture] = make_bundle(spec, root / architecture)
                print(f"exported the random-weight {architecture} bundle in {time.perf_counter() - t0:.0f} s",
                      flush=True)
            return bundles[architecture]

        model_line = f"{args.backbone} @ {args.image_size} px, random weights (seed 0), one bundle per architecture"
        results: list[tuple[str, Row]] = []
        skipped: list[str] = []
        for key, backend in rows:
            form = MODEL_FORMS[key]
            if args.time_budget_s is not None and time.monotonic() - start > args.time_budget_s:
                skipped.append(f"{form.label} / {backend}: not started, "
                               f"the time budget ({args.time_budget_s:.0f} s) was spent")
                continue
            bundle = bundle_for(form.architecture)
            for row in bench_variant(backend, bundle, args.device, cuda, args.iterations, args.throughput_iterations,
                                     batch_sizes, ("uint8",), extra_options=form.options):
                results.append((key, row))
                status = row.skipped or f"p50 {row.p50_ms:.2f} ms, " + ", ".join(
                    f"{v:.1f} pairs/s @ {b}" for b, v in row.throughput.items())
                print(f"  {form.label} / {backend}: {status}", flush=True)
            table = render(results, list(skipped), machine, model_line, batch_sizes[-1])
            if args.output:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(table, encoding="utf-8")
    table = render(results, skipped, machine, model_line, batch_sizes[-1])
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
