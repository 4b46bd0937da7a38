"""``dms-net-build-engine``: build (or load from cache) a bundle's TensorRT engine, and verify it.

    dms-net-build-engine bundles/dms-net-r152 --precision fp16 --max-batch 8 --verify

The command half of engine building: it loads the bundle through `TensorRTBackend` (which
finds a cached engine by its fingerprint or builds one with `tensorrt_build`) and prints
what it got. ``--input-form uint8`` (the default; what the node loads) builds from the
bundle's graph with the prepared-uint8 input in front (`prepared_input_onnx`): the engine
normalises on the GPU. ``--verify`` runs the engine and ONNX Runtime on the same inputs (real
fundus images prepared as the node does with ``--left/--right``, else random) and prints the
max difference: how a user checks a Jetson (JetPack 6: TensorRT 10.3, Python 3.10) before
deployment. Nothing in this repository has run against real TensorRT; see runtime/README.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.runtime.inputs import INPUT_FORMS, check_pair, float_pair, random_pair
from dms_net_core.runtime.tensorrt_build import EngineBuildError


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build (or load from cache) the TensorRT engine of a model bundle",
                                     add_help=add_help)
    parser.add_argument("bundle", type=Path, help="model bundle directory (dms-net-export output)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-mib", type=int, default=1024, help="TensorRT WORKSPACE memory-pool limit")
    parser.add_argument("--engine-dir", type=Path, default=None,
                        help="where to cache engines (default: BUNDLE/engines)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    parser.add_argument("--input-form", choices=INPUT_FORMS, default="uint8",
                        help="uint8: the node's prepared eyes, normalised on the GPU (default, what the node loads); "
                             "float32: normalised input")
    parser.add_argument("--verify", action="store_true", help="compare the engine with ONNX Runtime on the same inputs")
    parser.add_argument("--left", type=Path, default=None, help="left-eye image for --verify (default: random input)")
    parser.add_argument("--right", type=Path, default=None, help="right-eye image for --verify")
    parser.add_argument("--batch", type=int, default=2, help="batch size for --verify (random inputs)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="max probability difference for --verify (default 1e-3 fp32, 2e-2 fp16)")
    return parser


def verify_inputs(bundle: Any, left: Path | None, right: Path | None, batch: int, seed: int = 0,
                  input_form: str = "uint8") -> tuple[np.ndarray, np.ndarray]:
    """Real images prepared exactly as the node does, or a seeded random batch, in the engine's input form."""
    if (left is None) != (right is None):
        raise ValueError("give both --left and --right, or neither (random inputs)")
    if left is not None:
        from dms_net_core.data.preprocess import load_rgb, prepare_eye_uint8

        left_u8, right_u8 = (prepare_eye_uint8(load_rgb(str(p)), bundle.preprocess)[None] for p in (left, right))
        return (left_u8, right_u8) if input_form == "uint8" else float_pair(left_u8, right_u8, bundle.preprocess)
    return random_pair(batch, bundle.image_size, input_form, seed)


def compare_with_onnxruntime(engine_backend: Any, reference: Any, left: np.ndarray,
                             right: np.ndarray) -> dict[str, float]:
    left, right = check_pair(left, right, reference.image_size)
    a, b = engine_backend.infer(left, right), reference.infer(left, right)
    return {
        "probabilities": float(np.max(np.abs(a.probabilities - b.probabilities))),
        "logits": float(np.max(np.abs(a.logits - b.logits))),
        "attention": float(max(np.max(np.abs(a.attention_left - b.attention_left)),
                               np.max(np.abs(a.attention_right - b.attention_right)))),
    }


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dms_net_core.bundle import BundleError, ModelBundle
    from dms_net_core.runtime.tensorrt_backend import TensorRTBackend

    try:
        bundle = ModelBundle.load(args.bundle)
    except BundleError as exc:
        print(f"dms-net-build-engine: error: {exc}", file=sys.stderr)
        return 2
    try:
        backend = TensorRTBackend(
            bundle,
            precision=args.precision,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch,
            max_batch=args.max_batch,
            workspace_mib=args.workspace_mib,
            engine_dir=args.engine_dir,
            rebuild=args.rebuild,
            input_form=args.input_form,
        )
    except ImportError as exc:
        print(f"dms-net-build-engine: error: {exc.name or exc} is not installed: "
              "install TensorRT (JetPack) and cuda-python", file=sys.stderr)
        return 2
    except (EngineBuildError, RuntimeError, ValueError) as exc:
        print(f"dms-net-build-engine: error: {exc}", file=sys.stderr)
        return 1
    print(f"engine  {backend.engine_path} ({'built now' if backend.engine_built else 'cache hit'})")
    print(f"backend {backend.describe()}")
    rc = 0
    if args.verify:
        from dms_net_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

        try:
            left, right = verify_inputs(bundle, args.left, args.right, min(args.batch, args.max_batch),
                                        input_form=args.input_form)
        except (ValueError, FileNotFoundError) as exc:
            print(f"dms-net-build-engine: error: {exc}", file=sys.stderr)
            return 2
        reference = OnnxRuntimeBackend(bundle, device="cpu")
        diffs = compare_with_onnxruntime(backend, reference, left, right)
        tol = args.tolerance if args.tolerance is not None else (2e-2 if args.precision == "fp16" else 1e-3)
        ok = diffs["probabilities"] <= tol
        source = ("real images" if args.left else f"random batch {left.shape[0]}") + f", {args.input_form} input"
        print(
            f"verify  {source}: max |dp| {diffs['probabilities']:.2e}, |dlogit| {diffs['logits']:.2e}, "
            f"|dattention| {diffs['attention']:.2e} vs ONNX Runtime -> {'PASS' if ok else 'FAIL'} (tolerance {tol:g})"
        )
        rc = 0 if ok else 1
    backend.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
