"""Where DMS-Net's heads spend a batch-1 pair: ops, kernels-to-be, FLOPs and bytes per module.

Why this exists: on an H200 one DMS-Net pair (ResNet-152 @ 448, fp16, torch.compile + CUDA
graphs) took 3.19 ms against the plain binocular control's 2.13 ms with the same backbone
(issue 15). At batch 1 a GPU is bound by how many kernels run and how many bytes they move,
not by FLOPs, and both can be counted without a GPU: every non-view ATen op that reaches a
backend is one (or a few) GPU kernel launches in eager mode and inside a captured CUDA graph,
and Inductor can fuse only the pointwise ops, views and copies among them.

The script runs what the PyTorch backend runs (`ServingModel`: prepared uint8 eyes in,
BatchNorm folded, one packed output) once on the CPU under a `TorchDispatchMode` that sees
every ATen op after composite decomposition, and charges each op to the innermost module it
ran in (OSIM left/right, CASFM, CCAM, CIAM, ...). Per module it prints:

- ops: non-view ATen ops (each at least one GPU kernel in eager mode / a CUDA graph), split into
  pointwise (elementwise, Inductor-fusable), copies (cat, clone, copy_, dtype/layout
  conversions), reductions (mean, amax, ...) and compute (conv, matmul, attention, pooling,
  resampling, norms); views (free on a GPU) are counted apart;
- GFLOPs (2 per multiply-accumulate, `torch.utils.flop_counter`'s formulas) and MB written
  (the bytes of every non-view op's outputs: a proxy for memory traffic);
- parameters (M).

The same for the plain control (its head is a mean, a concat and a linear layer), in the
same run. ``--reference-heads`` builds the heads as they were before issue 15's rewrite
(`dms_net_core.model.reference_heads`), so before and after come from one run. Under
torch.compile most of those ops fuse: ``--inductor`` compiles the heads alone with Inductor's
CPU code generator and counts the kernels and library calls it launches (an approximation of
its GPU code generator's), ``--onnx`` counts the exported graph's nodes.

    python benchmarks/heads_breakdown.py                      # ResNet-152 @ 448 (the GPU target), ~30 s on 2 cores
    python benchmarks/heads_breakdown.py --reference-heads --inductor --onnx   # RESULTS.md 6 (~2 min)
    python benchmarks/heads_breakdown.py --backbone efficientnet_lite0 --image-size 256

The backbone runs 3 times per model (the two passes of BN folding, then the counted pass): a
handful of ResNet-152 forwards in all. Speed is not measured here (CPU time says little about
a GPU); `dms-net-bench` on a GPU measures it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.runtime.batchnorm_folding import fold_batchnorm
from dms_net_core.runtime.torch_serving import ServingModel

#: ops that copy or convert memory without arithmetic (Inductor folds most into neighbours)
COPY_OPS = {"cat", "stack", "clone", "copy_", "_to_copy", "contiguous", "constant_pad_nd", "repeat", "index_select",
            "flip"}
#: allocations without a kernel (BatchNorm's decomposition asks for empty statistics buffers)
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "empty_permuted"}
#: CPU attention ops the flop registry lacks (the CUDA ones are registered)
CPU_SDPA_OPS = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"}
CATEGORIES = ("pointwise", "copies", "reductions", "compute")


@dataclass
class ScopeCost:
    """What one module (scope) launched in one forward."""

    label: str
    ops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    views: int = 0
    flops: int = 0
    bytes_written: int = 0
    params: int = 0
    op_names: dict[str, int] = field(default_factory=dict)

    @property
    def kernels(self) -> int:
        return sum(self.ops.values())

    def add(self, other: "ScopeCost") -> None:
        for k in CATEGORIES:
            self.ops[k] += other.ops[k]
        self.views += other.views
        self.flops += other.flops
        self.bytes_written += other.bytes_written
        self.params += other.params
        for name, n in other.op_names.items():
            self.op_names[name] = self.op_names.get(name, 0) + n


def _is_view(func: Any) -> bool:
    returns = func._schema.returns
    alias = returns[0].alias_info if returns else None
    return alias is not None and not alias.is_write


def _category(func: Any) -> str:
    name = func._overloadpacket.__name__
    if name in COPY_OPS:
        return "copies"
    if torch.Tag.reduction in func.tags:
        return "reductions"
    if torch.Tag.pointwise in func.tags:
        return "pointwise"
    return "compute"


def _flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    packet = func._overloadpacket
    if packet in flop_registry:
        return int(flop_registry[packet](*args, **kwargs, out_val=out))
    if packet.__name__ in CPU_SDPA_OPS:
        q, k, v = args[:3]
        return int(sdpa_flop_count(q.shape, k.shape, v.shape))
    return 0


class OpCensus(TorchDispatchMode):
    """Counts every ATen op reaching a backend, charged to the innermost labelled scope."""

    def __init__(self, root_label: str) -> None:
        super().__init__()
        self.stack = [root_label]
        self.costs: dict[str, ScopeCost] = {root_label: ScopeCost(root_label)}

    @contextlib.contextmanager
    def scope(self, label: str) -> Iterator[None]:
        self.stack.append(label)
        self.costs.setdefault(label, ScopeCost(label))
        try:
            yield
        finally:
            self.stack.pop()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        cost = self.costs[self.stack[-1]]
        if func._overloadpacket.__name__ in ALLOCATIONS:
            return out
        if _is_view(func) or func._overloadpacket.__name__ in ("detach", "alias", "_unsafe_view", "view", "lift_fresh"):
            cost.views += 1
            return out
        cost.ops[_category(func)] += 1
        name = func._overloadpacket.__name__
        cost.op_names[name] = cost.op_names.get(name, 0) + 1
        cost.flops += _flops(func, args, kwargs, out)
        cost.bytes_written += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def _label_modules(census: OpCensus, labels: dict[nn.Module, str]) -> list[Any]:
    """Forward pre/post hooks that open ``census.scope(label)`` around each labelled module."""
    handles = []
    for module, label in labels.items():
        inner = sum(p.numel() for other in labels if other is not module and other in set(module.modules())
                    for p in other.parameters())
        census.costs.setdefault(label, ScopeCost(label)).params += sum(p.numel() for p in module.parameters()) - inner
        entered: list[contextlib.AbstractContextManager] = []

        def pre(_m: nn.Module, _a: Any, label: str = label, entered: list = entered) -> None:
            cm = census.scope(label)
            cm.__enter__()
            entered.append(cm)

        def post(_m: nn.Module, _a: Any, _o: Any, entered: list = entered) -> None:
            entered.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def scope_labels(model: nn.Module) -> dict[nn.Module, str]:
    """The modules a row is printed for, in the order the rows are printed."""
    named = [
        ("backbone", "backbone (both eyes)"), ("neck", "neck"),
        ("multiscale_left", "OSIM left"), ("multiscale_right", "OSIM right"),
        ("fusion", "CASFM"), ("ccam", "CCAM"), ("ciam", "CIAM"),
        ("classifier", "classifier (linear)"), ("eye_classifier", "per-eye classifier"),
    ]
    return {getattr(model, attr): label for attr, label in named if isinstance(getattr(model, attr, None), nn.Module)}


GLUE = "head glue (eye split, pooling, concat, dropout)"
PACKING = "output packing (logits + attention maps)"
NORMALISE = "input normalisation (uint8 eyes)"
HEAD_EXCLUDED = ("backbone (both eyes)", NORMALISE)


def census_of(cfg: DMSNetConfig, fold: bool, attention_outputs: bool = True, reference_heads: bool = False,
              channels_last: bool = True, seed: int = 0) -> tuple[list[ScopeCost], int]:
    """One counted batch-1 forward of the served model; returns the rows and the BNs folded.

    ``channels_last`` runs it in the GPU backend's memory layout (NHWC activations), where
    layout conversions that NCHW would not need (or the reverse) show up as copies."""
    torch.manual_seed(seed)
    model = build_model(cfg, reference_heads=reference_heads).eval()
    # What the backend does at load: fold BatchNorm with a forward at the bundle's size, which also
    # caches the size-dependent operators (OSIM's pooling/upsampling), so the count below is the
    # steady state of every later call.
    example = torch.randn(2, 1, 3, cfg.image_size, cfg.image_size)
    folded = 0
    if fold:
        folded = fold_batchnorm(model, (example[0], example[1]))
    else:
        with torch.no_grad():
            model(example[0], example[1])
    serving = ServingModel(model, PreprocessConfig(image_size=cfg.image_size), torch.float32, torch.device("cpu"),
                           attention_outputs=attention_outputs).eval()
    if channels_last:  # as the backend serves it on a GPU
        model.to(memory_format=torch.channels_last)
        serving.memory_format = torch.channels_last
    size = cfg.image_size
    gen = torch.Generator().manual_seed(seed)
    left, right = (torch.randint(0, 256, (1, size, size, 3), generator=gen, dtype=torch.uint8) for _ in range(2))
    census = OpCensus(PACKING)
    glue = ("control head (pool, [f_l, f_r, |f_l - f_r|], linear, ones maps)" if cfg.architecture == "plain_binocular"
            else GLUE)
    labels = {model: glue, **scope_labels(model)}
    if cfg.architecture == "plain_binocular":
        labels = {model: glue, model.backbone: "backbone (both eyes)"}
    handles = _label_modules(census, labels)
    normalise = serving.normalise

    def counted_normalise(images: torch.Tensor) -> torch.Tensor:
        with census.scope(NORMALISE):
            return normalise(images)

    serving.normalise = counted_normalise  # type: ignore[method-assign]
    try:
        # no_grad, not inference_mode: under inference_mode composite ops (conv2d, linear,
        # layer_norm, scaled_dot_product_attention) reach the mode undecomposed
        with torch.no_grad(), census:
            serving(left, right)
    finally:
        for h in handles:
            h.remove()
    order = [NORMALISE, "backbone (both eyes)",
             *[label for label in labels.values() if label not in ("backbone (both eyes)", glue)], glue, PACKING]
    return [census.costs[label] for label in order if label in census.costs], folded


def onnx_node_counts(cfg: DMSNetConfig, reference_heads: bool, seed: int = 0) -> tuple[int, int]:
    """(nodes the exporter writes, nodes ONNX Runtime runs after its optimisations) for the model's
    ONNX graph as `export_bundle` writes it (BN folded, opset 17), Constants not counted."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    from dms_net_core.bundle import output_names
    from dms_net_core.bundle_export import _export_onnx

    torch.manual_seed(seed)
    model = build_model(cfg, reference_heads=reference_heads).eval()
    example = tuple(torch.randn(2, 2, 3, cfg.image_size, cfg.image_size))
    fold_batchnorm(model, example)
    with tempfile.TemporaryDirectory() as tmp:
        raw, optimised = Path(tmp) / "model.onnx", Path(tmp) / "optimised.onnx"
        _export_onnx(model, example, raw, 17, output_names(cfg))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3  # not the warning that an NCHWc-optimised file is machine-specific
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        counts = [sum(n.op_type != "Constant" for n in onnx.load(str(path)).graph.node) for path in (raw, optimised)]
    return counts[0], counts[1]


def inductor_heads_kernels(cfg: DMSNetConfig, reference_heads: bool = False, seed: int = 0) -> tuple[int, int]:
    """(fused kernels Inductor generates, library calls it keeps: conv, GEMM, attention) for the
    served model's heads alone (the backbone replaced by its output: compile time stays seconds),
    compiled for the CPU in channels_last with BN folded. Inductor's CPU code generator fuses
    somewhat differently from its GPU one, so this approximates what ``torch.compile`` launches
    on a GPU; every launch counts once (a CUDA graph replays them all)."""
    import re

    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(seed)
    model = build_model(cfg, reference_heads=reference_heads).eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    model.backbone = nn.Identity()  # the heads see the backbone's [B, C, h, w] maps as their "images"
    example = torch.randn(2, 1, *features.shape[1:])
    fold_batchnorm(model, (example[0], example[1]))
    model = model.to(memory_format=torch.channels_last)
    serving = ServingModel(model, PreprocessConfig(image_size=cfg.image_size), torch.float32,
                           torch.device("cpu")).eval()
    left, right = (t.contiguous(memory_format=torch.channels_last) for t in example)
    torch._dynamo.reset()
    with torch.inference_mode():
        _, code = run_and_get_code(torch.compile(serving, dynamic=False), left, right)
    call = "\n".join(code)
    call = call[call.index("def call("):]
    fused = len(re.findall(r"^\s+cpp_fused_\w+\(", call, flags=re.M))
    library = len(re.findall(r"extern_kernels\.\w+\(|torch\.ops\.aten\.\w+\.\w+\(", call))
    return fused, library


def heads_total(rows: list[ScopeCost], label: str) -> ScopeCost:
    total = ScopeCost(label)
    for row in rows:
        if row.label not in HEAD_EXCLUDED:
            total.add(row)
    return total


def _row(model: str, cost: ScopeCost, bold: bool = False) -> str:
    b = "**" if bold else ""
    return (f"| {model} | {b}{cost.label}{b} | {b}{cost.kernels}{b} | {cost.ops['pointwise']} | {cost.ops['copies']} | "
            f"{cost.ops['reductions']} | {cost.ops['compute']} | {cost.views} | {cost.flops / 1e9:.3f} | "
            f"{cost.bytes_written / 2**20:.1f} | {cost.params / 1e6:.2f} |")


HEADER = (
    "| model | module | ops (kernels) | pointwise | copies | reductions | compute | views | GFLOPs | MB written "
    "| params (M) |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, Python {platform.python_version()}"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Per-module op/kernel, FLOP and byte breakdown of DMS-Net's heads (CPU-side)")
    p.add_argument("--backbone", default="resnet152")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--no-fold", action="store_true", help="keep BatchNorm unfolded (the backend folds it by default)")
    p.add_argument("--nchw", action="store_true",
                   help="count in NCHW (the CPU backend's layout) instead of channels_last (the GPU's)")
    p.add_argument("--reference-heads", action="store_true",
                   help="also count the heads as they were before issue 15 (same weights, same run)")
    p.add_argument("--no-attention-outputs", action="store_true",
                   help="also count the served model without the attention maps in its packed output")
    p.add_argument("--ops", action="store_true", help="list each module's op names and counts under the table")
    p.add_argument("--inductor", action="store_true",
                   help="also compile the heads with Inductor (CPU code generator) and count its kernels and "
                   "library calls")
    p.add_argument("--onnx", action="store_true",
                   help="also export DMS-Net to ONNX (rewritten heads and, with --reference-heads, the pre-rewrite "
                   "ones) and count nodes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    fold = not args.no_fold
    dms = DMSNetConfig(backbone=args.backbone, image_size=args.image_size)
    control = DMSNetConfig(architecture="plain_binocular", backbone=args.backbone, image_size=args.image_size)
    runs: list[tuple[str, DMSNetConfig, dict[str, Any]]] = [("DMS-Net", dms, {})]
    if args.reference_heads:
        runs.insert(0, ("DMS-Net, pre-rewrite heads", dms, {"reference_heads": True}))
    if args.no_attention_outputs:
        runs.append(("DMS-Net, no attention outputs", dms, {"attention_outputs": False}))
    runs.append(("plain control", control, {}))
    print(f"Machine: {machine_line()}")
    print(f"Model: {args.backbone} @ {args.image_size} px, random weights, batch 1 (one pair), uint8 eyes in, "
          f"BatchNorm {'folded' if fold else 'unfolded'}, {'NCHW' if args.nchw else 'channels_last'}, "
          "fp32 on the CPU\n")
    lines = [HEADER]
    totals = []
    details = []
    for name, cfg, kw in runs:
        rows, folded = census_of(cfg, fold, channels_last=not args.nchw, **kw)
        print(f"counted {name}: {folded} BatchNorms folded", file=sys.stderr, flush=True)
        total = heads_total(rows, "heads total (all but normalisation and backbone)")
        totals.append((name, total, rows))
        lines += [_row(name, r) for r in rows] + [_row(name, total, bold=True)]
        details += [f"- {name} / {r.label}: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(r.op_names.items(), key=lambda kv: -kv[1]))
                    for r in rows if r.op_names]
    print("\n".join(lines))
    backbone = next(r for r in totals[0][2] if r.label == "backbone (both eyes)")
    print(f"\nBackbone (both eyes, same in every row): {backbone.kernels} ops, {backbone.flops / 1e9:.1f} GFLOPs.")
    control_total = totals[-1][1]
    for name, total, _ in totals[:-1]:
        print(f"{name}: heads {total.kernels} ops vs the control's {control_total.kernels} "
              f"({total.kernels - control_total.kernels:+d}), "
              f"{total.flops / 1e9:.2f} vs {control_total.flops / 1e9:.3f} GFLOPs, "
              f"{total.bytes_written / 2**20:.1f} vs {control_total.bytes_written / 2**20:.2f} MB written.")
    if args.inductor:
        forms = ([("DMS-Net, pre-rewrite heads", dms, True)] if args.reference_heads else []) + [
            ("DMS-Net", dms, False), ("plain control", control, False)]
        print("\nHeads under torch.compile (Inductor's CPU code generator, heads only, channels_last, BN folded):\n")
        print("| model | fused kernels | library calls (conv, GEMM, attention) | launches |\n|---|---:|---:|---:|")
        for name, cfg, reference in forms:
            fused, library = inductor_heads_kernels(cfg, reference)
            print(f"| {name} | {fused} | {library} | {fused + library} |", flush=True)
    if args.onnx:
        for name, reference in (([("pre-rewrite heads", True)] if args.reference_heads else [])
                                + [("rewritten heads", False)]):
            raw, optimised = onnx_node_counts(dms, reference)
            print(f"ONNX graph of DMS-Net, {name}: {raw} nodes exported (Constants not counted), "
                  f"{optimised} after ONNX Runtime's optimisations.")
    if args.ops:
        print("\nOps per module:\n" + "\n".join(details))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
