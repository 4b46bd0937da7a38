"""Parameters, FLOPs and eager CPU latency of DMS-Net configurations, as one Markdown table.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` for one *pair* (batch 1: both eyes
go through the backbone), counted as 2 x multiply-accumulates (PyTorch's convention). Latency is
eager fp32 on this machine's CPU, batch 1, best of a few iterations after a warm-up
(the minimum, since on a shared machine slower runs measure other processes); configs
above ``--latency-gflops-limit`` are skipped (stated in the table) so the script stays short.

    python benchmarks/model_cost.py [--iters 3] [--latency-gflops-limit 150]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dms_net_core.model import DMSNetConfig, build_model


@dataclass(frozen=True)
class Case:
    architecture: str
    backbone: str
    image_size: int

    @property
    def config(self) -> DMSNetConfig:
        return DMSNetConfig(architecture=self.architecture, backbone=self.backbone, image_size=self.image_size)


CASES = (
    Case("dms_net", "resnet50", 224),
    Case("dms_net", "resnet50", 448),
    Case("dms_net", "resnet101", 224),
    Case("dms_net", "resnet101", 448),
    Case("dms_net", "resnet152", 224),
    Case("dms_net", "resnet152", 448),
    Case("dms_net", "efficientnet_lite0", 256),
    Case("plain_binocular", "efficientnet_lite0", 256),
)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def count_flops(model: torch.nn.Module, left: torch.Tensor, right: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(left, right)
    return int(counter.get_total_flops())


def latency_ms(model: torch.nn.Module, left: torch.Tensor, right: torch.Tensor, iters: int) -> float:
    with torch.no_grad():
        model(left, right)  # warm-up
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(left, right)
            times.append((time.perf_counter() - start) * 1e3)
    return min(times)  # best-of: the machine is shared, slower runs measure other processes


def measure(case: Case, iters: int, gflops_limit: float) -> dict[str, str]:
    torch.manual_seed(0)
    model = build_model(case.config).eval()
    size = case.image_size
    left, right = torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    gflops = count_flops(model, left, right) / 1e9
    if gflops > gflops_limit:
        latency = f"skipped (> {gflops_limit:g} GFLOPs)"
    else:
        latency = f"{latency_ms(model, left, right, iters):.0f}"
    return {
        "architecture": case.architecture,
        "backbone": case.backbone,
        "image": f"{size}x{size}",
        "params_m": f"{params / 1e6:.1f}",
        "head_params_m": f"{(params - backbone_params) / 1e6:.1f}",
        "gflops": f"{gflops:.1f}",
        "latency": latency,
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    header = (
        "| architecture | backbone | image | params (M) | non-backbone params (M) | GFLOPs / pair "
        "| CPU fp32 ms / pair |\n"
        "|---|---|---|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['architecture']} | {r['backbone']} | {r['image']} | {r['params_m']} | {r['head_params_m']} "
        f"| {r['gflops']} | {r['latency']} |"
        for r in rows
    ]
    return "\n".join([header, *lines])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="DMS-Net parameters, FLOPs and CPU latency", add_help=True)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per config after one warm-up")
    parser.add_argument(
        "--latency-gflops-limit", type=float, default=150.0, help="skip latency for configs above this many GFLOPs"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}\n"
    )
    rows = []
    for case in CASES:
        start = time.perf_counter()
        rows.append(measure(case, args.iters, args.latency_gflops_limit))
        print(f"measured {case} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(markdown_table(rows))
    print(
        "\nFLOPs: FlopCounterMode, one pair (batch 1, both eyes), 2 FLOPs per multiply-accumulate. "
        "Latency: eager fp32, batch 1, best of "
        f"{args.iters} iterations after one warm-up; default DMSNetConfig otherwise (embed_dim 256, 8 heads)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
