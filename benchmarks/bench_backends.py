"""``dms-net-bench``: latency and throughput of every available inference backend, as a Markdown table.

    dms-net-bench --bundle bundles/dms-net-r152 --output benchmarks/results/orin.md
    dms-net-bench --backbone resnet152 --image-size 448          # GPU target, random weights
    dms-net-bench                                                  # CPU default: resnet50 @ 224, < 2 min

Each row is one backend variant (torch fp32/fp16, torch fp16 + CUDA graph, torch fp16 +
torch.compile with and without its own CUDA graphs or kernel autotuning, ONNX Runtime, TensorRT fp16/fp32). The
torch rows fold BatchNorm into the convolutions (the backend's default); the ``-unfolded``
rows keep it, so the table shows what folding buys in the same run. Latency = one pair (batch 1), p50/p95
over ``--iterations`` after warm-up; throughput = pairs/s at each ``--batch-sizes``.
Every time is end to end as the node sees it: host arrays in, host probabilities and
attention maps out (H2D/D2H copies, normalisation and sigmoid included). ``--inputs`` picks
the input form: ``uint8`` prepared eyes [B,S,S,3] (what the node sends; the torch backend
normalises them on the GPU, the others on the host) and/or ``float32`` normalised [B,3,S,S];
each form is its own row, timed on the same loaded backend. Variants that cannot run
here are listed with the reason instead of silently missing.
Speed lives here, never in unit tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.errors import first_line
from dms_net_core.runtime.inputs import INPUT_FORMS, random_pair

#: name -> (backend, precision, options); device is chosen per machine
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "torch-fp32": ("torch", "fp32", {}),
    "torch-fp32-unfolded": ("torch", "fp32", {"fold_batchnorm": False}),
    "torch-fp16": ("torch", "fp16", {}),
    "torch-fp16-cudagraph": ("torch", "fp16", {"cuda_graph": True}),
    "torch-fp16-cudagraph-unfolded": ("torch", "fp16", {"cuda_graph": True, "fold_batchnorm": False}),
    "torch-fp16-compile": ("torch", "fp16", {"compile": True}),
    "torch-fp16-compile-cudagraphs": ("torch", "fp16", {"compile": True, "compile_mode": "reduce-overhead"}),
    # the same without cuDNN's autotuner (the backend's default turns it on): isolates that effect
    "torch-fp16-compile-cudagraphs-nocudnnbench": ("torch", "fp16", {"compile": True, "compile_mode": "reduce-overhead",
                                                                      "cudnn_benchmark": False}),
    # Inductor's kernels inside the backend's own CUDA graph: replay without dynamo guards or
    # cudagraph-tree bookkeeping on the host (not yet run on a GPU)
    "torch-fp16-compile-owngraph": ("torch", "fp16", {"compile": True, "cuda_graph": True}),
    # Inductor freezing (weights as constants: pre-laid-out, folded) with its CUDA graphs (not yet run on a GPU)
    "torch-fp16-compile-frozen-cudagraphs": ("torch", "fp16", {
        "compile": True, "compile_options": {"freezing": True, "triton.cudagraphs": True}}),
    # Inductor also autotunes conv/GEMM kernels (Triton templates vs cuDNN/cuBLAS), with CUDA graphs:
    # minutes to compile a ResNet-152, the next candidate after reduce-overhead's 3.44 ms (RESULTS.md 4)
    "torch-fp16-compile-max-autotune": ("torch", "fp16", {"compile": True, "compile_mode": "max-autotune"}),
    "onnxruntime": ("onnxruntime", "fp32", {}),
    "tensorrt-fp16": ("tensorrt", "fp16", {}),
    "tensorrt-fp32": ("tensorrt", "fp32", {}),
}
GPU_ONLY = {
    "torch-fp16", "torch-fp16-cudagraph", "torch-fp16-cudagraph-unfolded", "torch-fp16-compile",
    "torch-fp16-compile-cudagraphs", "torch-fp16-compile-cudagraphs-nocudnnbench", "torch-fp16-compile-owngraph",
    "torch-fp16-compile-frozen-cudagraphs", "torch-fp16-compile-max-autotune", "tensorrt-fp16", "tensorrt-fp32",
}



@dataclass
class Row:
    variant: str
    inputs: str = "uint8"
    describe: str = ""
    p50_ms: float | None = None
    p95_ms: float | None = None
    throughput: dict[int, float] = field(default_factory=dict)
    skipped: str | None = None
    startup_s: float | None = None
    #: batch-1 GPU-timeline split (p50 ms of upload, network, download) where the backend reports it
    stages: dict[str, float] = field(default_factory=dict)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark DMS-Net inference backends (Markdown table)", add_help=add_help)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path, help="existing model bundle directory")
    src.add_argument("--config", action="store_true",
                     help="build a random-weight model from --backbone/--image-size (the default without --bundle)")
    p.add_argument("--backbone", default=None,
                   help="backbone for --config (default: resnet152 on GPU, resnet50 on CPU)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size for --config (default: 448 on GPU, 224 on CPU)")
    p.add_argument("--architecture", default="dms_net", choices=("dms_net", "plain_binocular"))
    p.add_argument("--save-bundle", type=Path, default=None,
                   help="with --config: keep the random-weight bundle here, so a later run can take it with --bundle "
                   "(no second export)")
    p.add_argument("--backends", default="all", help=f"comma list of {', '.join(VARIANTS)} (default all); "
                   "NAME@uint8 or NAME@float32 times that row with only that input form, overriding --inputs")
    p.add_argument("--iterations", type=int, default=None, help="batch-1 timed iterations (default 100 GPU / 10 CPU)")
    p.add_argument("--throughput-iterations", type=int, default=None,
                   help="timed batches per batch size (default 20 GPU / 2 CPU)")
    p.add_argument("--batch-sizes", default=None, help="throughput batch sizes, comma list (default 8,32 GPU / 8 CPU)")
    p.add_argument("--inputs", default="uint8",
                   help="comma list of input forms to time: uint8 (prepared eyes, the node's) "
                   "and/or float32 (normalised)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--output", type=Path, default=None, help="also write the table to this file")
    return p


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def machine_description(cuda: bool) -> str:
    """One paragraph naming the hardware and the library versions that produced the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        cores = f"{psutil.cpu_count(logical=False)} physical / {psutil.cpu_count()} logical cores"
    except ImportError:
        cores = f"{os.cpu_count()} logical cores"
    parts = [f"CPU {cpu} ({cores})"]
    versions = [f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import torch

        versions.append(f"torch {torch.__version__}")
        if cuda:
            props = torch.cuda.get_device_properties(0)
            parts.insert(0, f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}, "
                            f"CUDA {torch.version.cuda})")
    except ImportError:
        versions.append("torch not installed")
    try:
        import onnxruntime as ort

        versions.append(f"onnxruntime {ort.__version__} "
                        f"({', '.join(p.replace('ExecutionProvider', '') for p in ort.get_available_providers())})")
    except ImportError:
        versions.append("onnxruntime not installed")
    try:
        import tensorrt as trt

        versions.append(f"tensorrt {trt.__version__}")
    except ImportError:
        versions.append("tensorrt not installed")
    return "; ".join(parts) + ". " + ", ".join(versions) + "."


def make_bundle(args: argparse.Namespace, out_dir: Path) -> Any:
    """A random-weight model of the requested backbone/size, exported to a temporary bundle."""
    import torch

    from dms_net_core.bundle_export import export_bundle
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.model import build_model
    from dms_net_core.model.config import DMSNetConfig

    cfg = DMSNetConfig(architecture=args.architecture, backbone=args.backbone, image_size=args.image_size,
                       pretrained=None)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), out_dir,
                         name=f"bench-{cfg.backbone}-{cfg.image_size}")


def _time_batches(backend: Any, batch: int, size: int, iterations: int, warmup: int, inputs: str) -> list[float]:
    left, right = random_pair(batch, size, inputs, seed=batch)
    for _ in range(warmup):
        backend.infer(left, right)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        backend.infer(left, right)
        times.append(time.perf_counter() - t0)
    return times


STAGES = ("upload", "network", "download")


def _stage_split(backend: Any, size: int, inputs: str, iterations: int) -> dict[str, float]:
    """p50 of the backend's own stage timings at batch 1, in a separate pass after the timed one
    (the CUDA events cost microseconds, so they never run inside the latency measurement)."""
    if not hasattr(backend, "stage_timing") or getattr(backend.device, "type", backend.device) != "cuda":
        return {}
    left, right = random_pair(1, size, inputs, seed=1)
    backend.stage_timing = True
    try:
        runs = [backend.infer(left, right).timings_ms for _ in range(iterations)]
    finally:
        backend.stage_timing = False
    return {k: _percentile([r[k] for r in runs], 50) for k in STAGES if all(k in r for r in runs)}


def bench_variant(name: str, bundle: Any, device: str, cuda: bool, iterations: int, tp_iterations: int,
                  batch_sizes: list[int], input_forms: tuple[str, ...] = ("uint8",),
                  extra_options: dict[str, Any] | None = None) -> list[Row]:
    """One loaded backend, one row per input form (a skipped variant gives one skipped row).

    ``extra_options`` go to the backend on top of the variant's own (e.g. a ``model_factory`` that
    builds another form of the bundle's model: `benchmarks.heads_overhead`)."""
    from dms_net_core.runtime import create_backend

    backend_name, precision, options = VARIANTS[name]
    skipped = Row(name, inputs=",".join(input_forms))
    if name in GPU_ONLY and not cuda:
        skipped.skipped = "needs a CUDA GPU"
        return [skipped]
    options = {**options, **(extra_options or {})}
    if backend_name == "tensorrt":
        options["max_batch"] = max([1, *batch_sizes])
    dev = "cpu" if not cuda else ("cuda" if backend_name in ("torch", "tensorrt") else device)
    t0 = time.perf_counter()
    try:
        backend = create_backend(bundle, backend=backend_name, device=dev, precision=precision, **options)
    except ImportError as exc:
        skipped.skipped = f"{exc.name or exc} not installed"
        return [skipped]
    except Exception as exc:  # noqa: BLE001 - report and continue with the next variant
        skipped.skipped = f"failed to load: {first_line(exc)}"
        return [skipped]
    load_s = time.perf_counter() - t0
    describe = backend.describe()
    if cuda and getattr(backend, "device", "cuda") == "cpu":
        # a CPU engine on a GPU machine (e.g. onnxruntime without CUDA EP): keep the run short
        iterations, tp_iterations = min(iterations, 10), min(tp_iterations, 2)
        describe += f" (CPU: {iterations} latency iterations, {tp_iterations} batches)"
    size = bundle.image_size
    heavy_warmup = 3 if "compile" in name or "cudagraph" in name else 2
    rows = []
    try:
        for form in input_forms:
            row = Row(name, inputs=form, describe=describe)
            rows.append(row)
            if form not in backend.input_forms:
                row.skipped = f"this backend takes only {' or '.join(backend.input_forms)} input"
                continue
            t1 = time.perf_counter()
            try:
                backend.warmup(heavy_warmup, dtype=form)
                row.startup_s = load_s + time.perf_counter() - t1  # each form compiles/captures its own graph
                lat = _time_batches(backend, 1, size, iterations, heavy_warmup, form)
                row.p50_ms, row.p95_ms = _percentile(lat, 50) * 1e3, _percentile(lat, 95) * 1e3
                row.stages = _stage_split(backend, size, form, min(iterations, 30))
                for b in batch_sizes:
                    times = _time_batches(backend, b, size, tp_iterations, heavy_warmup if cuda else 1, form)
                    row.throughput[b] = b * len(times) / sum(times)
            except Exception as exc:  # noqa: BLE001
                row.skipped = f"failed while running: {first_line(exc)}"
    finally:
        backend.close()
        if cuda:
            import torch

            torch.cuda.empty_cache()
    return rows


def render(rows: list[Row], machine: str, model_line: str, batch_sizes: list[int], iterations: int,
           tp_iterations: int) -> str:
    head = ["backend", "input", "batch-1 p50 ms", "batch-1 p95 ms", *[f"pairs/s @ {b}" for b in batch_sizes],
            "start-up s", "batch-1 upload / network / download ms", "details"]
    lines = [
        "# DMS-Net inference backends",
        "",
        f"Machine: {machine}",
        "",
        f"Model: {model_line}",
        "",
        (
            f"Latency: one pair, {iterations} timed iterations after warm-up. "
            f"Throughput: {tp_iterations} timed batches per size. "
            "Host arrays in (uint8: prepared eyes [B,S,S,3], normalised by the backend; "
            "float32: normalised [B,3,S,S]), "
            "host probabilities + attention out (copies included). The upload / network / download split is the CUDA "
            "events' GPU timeline of one call, taken in a separate pass."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        if r.skipped:
            continue
        tp = [f"{r.throughput[b]:.1f}" if b in r.throughput else "-" for b in batch_sizes]
        split = " / ".join(f"{r.stages[k]:.2f}" for k in STAGES) if r.stages else "-"
        lines.append(f"| {r.variant} | {r.inputs} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | " + " | ".join(tp)
                     + f" | {r.startup_s:.1f} | {split} | {r.describe} |")
    skipped = [r for r in rows if r.skipped]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {r.variant} ({r.inputs}): {r.skipped}" for r in skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        import torch

        cuda = args.device != "cpu" and torch.cuda.is_available()
    except ImportError:
        cuda = False
    if args.device == "cuda" and not cuda:
        print("dms-net-bench: error: --device cuda but no CUDA GPU is visible to torch", file=sys.stderr)
        return 2
    args.backbone = args.backbone or ("resnet152" if cuda else "resnet50")
    args.image_size = args.image_size or (448 if cuda else 224)
    iterations = args.iterations or (100 if cuda else 10)
    tp_iterations = args.throughput_iterations or (20 if cuda else 2)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("8,32" if cuda else "8")).split(",") if b.strip()]
    input_forms = tuple(f.strip() for f in args.inputs.split(",") if f.strip())
    if not input_forms or any(f not in INPUT_FORMS for f in input_forms):
        print(f"dms-net-bench: error: --inputs {args.inputs!r}: choose from {', '.join(INPUT_FORMS)}", file=sys.stderr)
        return 2
    entries = list(VARIANTS) if args.backends == "all" else [n.strip() for n in args.backends.split(",") if n.strip()]
    plan = [(e.partition("@")[0], (e.partition("@")[2],) if "@" in e else input_forms) for e in entries]
    unknown = [e for e, (name, forms) in zip(entries, plan)
               if name not in VARIANTS or any(f not in INPUT_FORMS for f in forms)]
    if unknown:
        print(f"dms-net-bench: error: unknown backends {unknown}: choose from {', '.join(VARIANTS)} "
              "(optionally @uint8 or @float32)", file=sys.stderr)
        return 2

    from dms_net_core.bundle import BundleError, ModelBundle

    with tempfile.TemporaryDirectory(prefix="dms-bench-") as tmp:
        t0 = time.perf_counter()
        try:
            bundle = (ModelBundle.load(args.bundle) if args.bundle
                      else make_bundle(args, args.save_bundle or Path(tmp) / "bundle"))
        except BundleError as exc:
            print(f"dms-net-bench: error: {exc}", file=sys.stderr)
            return 2
        cfg = bundle.model_config
        source = (f"bundle {args.bundle}" if args.bundle
                  else f"random weights, exported in {time.perf_counter() - t0:.0f} s")
        model_line = (f"{cfg.architecture} / {cfg.backbone} @ {cfg.image_size} px ({bundle.model_id}; {source}; "
                      f"ONNX {bundle.onnx_path.stat().st_size / 2**20:.0f} MiB)")
        print(model_line, flush=True)
        rows = []
        for name, forms in plan:
            for row in bench_variant(name, bundle, args.device, cuda, iterations, tp_iterations, batch_sizes, forms):
                status = row.skipped or f"p50 {row.p50_ms:.2f} ms, " + ", ".join(
                    f"{v:.1f} pairs/s @ {b}" for b, v in row.throughput.items())
                if row.stages:
                    status += ", batch-1 " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.stages.items())
                print(f"  {name} ({row.inputs}): {status}", flush=True)
                rows.append(row)
    table = render(rows, machine_description(cuda), model_line, batch_sizes, iterations, tp_iterations)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
