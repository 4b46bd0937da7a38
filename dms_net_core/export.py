"""``dms-net-export``: training checkpoint (.pt) -> checked model bundle directory.

    dms-net-export runs/exp1/best.pt --output bundles/dms-net-r152 --name dms-net-r152

Rebuilds the network from the checkpoint (`dms_net_core.checkpoint`: every weight must fit), and calls
`dms_net_core.bundle_export.export_bundle`, which refuses to write ``model.json`` unless ONNX
Runtime reproduces eager PyTorch. Thresholds, validation metrics and the data summary
are copied from the checkpoint so the robot applies the thresholds tuned on validation.
A plain binocular model with per-eye heads is exported with its class activation maps
(outputs ``cam_left``/``cam_right``, `dms_net_core.model.cam`), the node's visual evidence for
such a model; ``--no-cams`` leaves them out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dms_net_core.bundle import BundleError
from dms_net_core.bundle_export import DEFAULT_OPSET, export_bundle
from dms_net_core.checkpoint import (
    checkpoint_data_summary,
    checkpoint_metrics,
    checkpoint_model_config,
    checkpoint_preprocess,
    checkpoint_thresholds,
    load_checkpoint,
    model_from_checkpoint,
)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a DMS-Net checkpoint to a model bundle (ONNX + safetensors + model.json)", add_help=add_help
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint .pt written by dms-net-train")
    parser.add_argument("--output", "-o", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--name", default="dms-net", help="bundle name; the model id is <name>@<onnx sha256[:12]>")
    parser.add_argument("--weights-dtype", choices=("fp32", "fp16"), default="fp32",
                        help="storage precision of the weights (fp16 halves the bundle; inference still runs in fp32)")
    parser.add_argument("--no-torch-weights", action="store_true",
                        help="deployment-only bundle: ONNX only, no weights.safetensors (no PyTorch backend)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET}: TensorRT 8.6 and 10.x parse it)")
    parser.add_argument("--no-cams", action="store_true",
                        help="no class activation map outputs "
                             "(by default a plain per-eye model gets cam_left/cam_right)")
    return parser


def _size_mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        model_config = checkpoint_model_config(ckpt)
        preprocess = checkpoint_preprocess(ckpt)
        model = model_from_checkpoint(ckpt)  # every weight, or one line naming the misfit
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-export: error: {exc}", file=sys.stderr)
        return 2
    try:
        bundle = export_bundle(
            model,
            model_config,
            preprocess,
            args.output,
            thresholds=checkpoint_thresholds(ckpt),
            metrics=checkpoint_metrics(ckpt),
            data_summary=checkpoint_data_summary(ckpt),
            name=args.name,
            opset=args.opset,
            weights_dtype=args.weights_dtype,
            include_torch_weights=not args.no_torch_weights,
            cams=False if args.no_cams else None,
        )
    except BundleError as exc:
        print(f"dms-net-export: error: {exc}", file=sys.stderr)
        return 1
    exp = bundle.meta["export"]
    print(f"model id      {bundle.model_id}")
    print(f"bundle        {bundle.path}")
    print(f"architecture  {model_config.architecture} / {model_config.backbone} @ {model_config.image_size}px")
    print(f"model.onnx    {_size_mib(bundle.onnx_path)}  ({exp['exporter']})")
    weights = _size_mib(bundle.weights_path) if bundle.weights_path.is_file() else "none (deployment-only bundle)"
    print(f"weights       {weights}  (stored {args.weights_dtype})")
    print(f"thresholds    {' '.join(f'{c}={t:.2f}' for c, t in zip(bundle.class_codes, bundle.thresholds))}")
    print(f"check         ONNX Runtime vs PyTorch max |dp| = {exp['onnx_check_max_abs_diff']:.2e}  PASS")
    if bundle.has_cams:
        print(f"evidence      class activation maps {bundle.meta['outputs']['cam_left'][1:]} per eye, "
              f"ONNX Runtime vs PyTorch {exp['onnx_check_cam_max_rel_diff']:.2e} of their range  PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
