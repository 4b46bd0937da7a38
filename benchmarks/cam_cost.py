"""What the class activation map outputs cost a plain per-eye bundle, before/after in ONE process.

Two bundles of the same randomly initialised model (the shipped architecture by default:
plain binocular EfficientNet-Lite0 with per-eye heads at 256 px) are exported, one with
``cams=False`` (the graph every plain per-eye bundle had before CAMs, e.g. models/demo) and one
with the CAM outputs; optionally both as the shipped form, a 3-member mirror-TTA ensemble
(``--ensemble``). Each is timed on the same backend with batch-1 prepared uint8 pairs, the
rounds interleaved (A, B, A, B, ...) so that load from other processes on the machine falls on
both alike. Printed: p50/p90 per bundle, the p50 difference, and ONNX sizes.

    nice -n 19 python -m benchmarks.cam_cost                                  # Lite0 @ 256, ONNX Runtime
    nice -n 19 python -m benchmarks.cam_cost --ensemble --rounds 20           # the shipped form
    nice -n 19 python -m benchmarks.cam_cost --backbone tiny --image-size 64  # seconds: a dry run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _model(args: argparse.Namespace):
    import torch

    from dms_net_core.model import DMSNetConfig, build_model
    from dms_net_core.model.ensemble import EnsembleNet
    from dms_net_core.model.tta import HorizontalFlipTTA

    extra = {} if args.backbone != "tiny" else dict(embed_dim=32, num_heads=4, dense_growth=16, dense_layers=2)
    cfg = DMSNetConfig(architecture="plain_binocular", backbone=args.backbone, image_size=args.image_size,
                       per_eye_heads=True, pretrained=None, **extra)
    torch.manual_seed(0)
    if not args.ensemble:
        return build_model(cfg).eval(), cfg
    members = [HorizontalFlipTTA(build_model(cfg).eval()) for _ in range(3)]
    return EnsembleNet(members, per_eye=True).eval(), cfg


def _time(backend, pair, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.infer(*pair)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--ensemble", action="store_true", help="3 members, each mirror-TTA (the shipped bundle's form)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--per-round", type=int, default=5, help="timed pairs per bundle per round")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    args = p.parse_args(argv)

    from dms_net_core.bundle_export import export_bundle
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.runtime import create_backend

    model, cfg = _model(args)
    pre = PreprocessConfig(image_size=cfg.image_size)
    rng = np.random.default_rng(0)
    pair = tuple(rng.integers(0, 256, size=(1, cfg.image_size, cfg.image_size, 3), dtype=np.uint8) for _ in range(2))
    options = {"intra_op_threads": args.threads} if args.backend == "onnxruntime" and args.threads else {}
    with tempfile.TemporaryDirectory() as tmp:
        backends, sizes = {}, {}
        for label, cams in (("without CAMs", False), ("with CAMs", True)):
            bundle = export_bundle(model, cfg, pre, Path(tmp) / label.replace(" ", "_"), name="cam-cost", cams=cams,
                                   include_torch_weights=args.backend == "torch" and not args.ensemble)
            backends[label] = create_backend(bundle, backend=args.backend, device="cpu", **options)
            backends[label].warmup(3)
            sizes[label] = bundle.onnx_path.stat().st_size / 2**20
        times: dict[str, list[float]] = {label: [] for label in backends}
        for _ in range(args.rounds):
            for label, backend in backends.items():
                times[label] += _time(backend, pair, args.per_round)
        form = f"3-member mirror-TTA ensemble of {args.backbone}" if args.ensemble else args.backbone
        print(f"{form} plain per-eye @ {cfg.image_size}px, {args.backend} CPU, batch 1, "
              f"{args.rounds} interleaved rounds x {args.per_round} pairs")
        p50 = {}
        for label, t in times.items():
            p50[label] = float(np.percentile(t, 50))
            print(f"  {label:13s} p50 {p50[label]:8.2f} ms  p90 {np.percentile(t, 90):8.2f} ms  "
                  f"ONNX {sizes[label]:.2f} MiB")
        d = p50["with CAMs"] - p50["without CAMs"]
        print(f"  CAM outputs   p50 {d:+.2f} ms ({100 * d / p50['without CAMs']:+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
