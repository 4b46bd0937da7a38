"""Training throughput (pairs/s) of DMS-Net configurations, AMP (bf16) against fp32.

One optimiser step = forward + backward + AdamW on a batch of synthetic pairs already on the
device, so the number is the model's own cost (the real trainer feeds from an in-memory GPU
cache, so data loading adds little). Warm-up steps are excluded; CUDA is synchronised
around the timed loop. Prints a Markdown table naming the device.

    python benchmarks/train_throughput.py --configs dms_net:efficientnet_lite0:256 dms_net:resnet152:256
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+",
                   default=["dms_net:efficientnet_lite0:256", "plain_binocular:efficientnet_lite0:256",
                            "dms_net:resnet152:256"],
                   help="ARCHITECTURE:BACKBONE:SIZE items")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--amp", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp16", "fp32"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default=None, help="also write the table here")
    return p


def pairs_per_second(cfg: DMSNetConfig, batch: int, steps: int, warmup: int, amp: str, device: torch.device) -> float:
    model = build_model(cfg).to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    left = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device).to(memory_format=fmt)
    right = torch.randn_like(left)
    target = (torch.rand(batch, cfg.num_classes, device=device) > 0.8).float()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits, _, _ = model(left, right)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> str:
    args = get_args_parser().parse_args(argv)
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads")
    lines = [f"Training throughput on {name}, torch {torch.__version__}, batch {args.batch_size} pairs, "
             f"{args.steps} timed steps after {args.warmup} warm-up, channels_last on CUDA.", "",
             "| architecture | backbone | size | " + " | ".join(f"{a} pairs/s" for a in args.amp) + " | speed-up |",
             "|---|---|---:|" + "---:|" * len(args.amp) + "---:|"]
    for item in args.configs:
        arch, backbone, size = item.split(":")
        cfg = DMSNetConfig(architecture=arch, backbone=backbone, image_size=int(size), pretrained=None)
        rates = [pairs_per_second(cfg, args.batch_size, args.steps, args.warmup, a, device) for a in args.amp]
        speedup = f"{rates[0] / rates[-1]:.2f}x" if len(rates) > 1 else "-"
        lines.append(f"| {arch} | {backbone} | {size} | " + " | ".join(f"{r:.0f}" for r in rates) + f" | {speedup} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table)
    return table


if __name__ == "__main__":
    main()
