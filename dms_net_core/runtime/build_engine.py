"""Build a TensorRT engine from a bundle's ONNX (``dms-net-build-engine``), and verify it.

    dms-net-build-engine bundles/dms-net-r152 --precision fp16 --max-batch 8 --verify

The build follows NVIDIA's documented TensorRT Python flow: ``trt.Builder`` -> network
(EXPLICIT_BATCH flag on TensorRT 8.x, default flags on 10.x) -> ``trt.OnnxParser`` (errors
listed) -> builder config with the WORKSPACE memory-pool limit, FP16 when requested and
``platform_has_fast_fp16``, one optimization profile (min/opt/max batch for "left" and
"right") and a persistent timing cache -> ``build_serialized_network``.

``--input-form uint8`` (the default; what the node loads) builds from the bundle's graph with
the prepared-uint8 input in front (`prepared_input_onnx`): the engine normalises on the GPU.
``--verify`` runs the engine and ONNX Runtime on the same inputs (real fundus images prepared
as the node does with ``--left/--right``, else random) and prints the max difference: how a
user checks a Jetson (JetPack 6: TensorRT 10.3, Python 3.10) before deployment.
Nothing in this repository has run against real TensorRT; see runtime/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.bundle import INPUT_NAMES
from dms_net_core.runtime.inputs import INPUT_FORMS, check_pair, float_pair, input_shape, random_pair

LOGGER = logging.getLogger("dms_net_core.runtime")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build the network; the message names the fix."""


def trt_version_tuple(trt: Any) -> tuple[int, int]:
    """(major, minor) of the installed TensorRT."""
    parts = (str(trt.__version__).split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def trt_major(trt: Any) -> int:
    return trt_version_tuple(trt)[0]


def make_trt_logger(trt: Any, verbose: bool = False) -> Any:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def timing_cache_path(engines_dir: Path, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """Timing caches are per TensorRT version and GPU, like engines."""
    key = hashlib.sha256(f"{trt_version}|{gpu_name}|{compute_capability}".encode()).hexdigest()[:12]
    return engines_dir / f"timing_{key}.cache"


def build_serialized_engine(
    trt: Any,
    onnx_path: Path,
    *,
    image_size: int,
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_mib: int = 1024,
    timing_cache: Path | None = None,
    logger: Any = None,
    input_form: str = "float32",
    preprocess: Any = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (bytes). Raises `EngineBuildError`.

    ``input_form="uint8"`` builds from `prepared_input_model` (prepared uint8 eyes in,
    normalised on the GPU with ``preprocess``'s mean/std) instead of the float32 graph.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineBuildError(f"batch range min {min_batch} <= opt {opt_batch} <= max {max_batch} violated: fix --min/--opt/--max-batch")
    logger = logger or make_trt_logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it.
    flags = 0 if trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if input_form == "uint8":
        if preprocess is None:
            raise EngineBuildError("a uint8-input engine needs the bundle's PreprocessConfig (mean/std): pass preprocess=bundle.preprocess")
        from dms_net_core.runtime.prepared_input_onnx import prepared_input_model

        model_bytes = prepared_input_model(onnx_path, preprocess)
    elif input_form == "float32":
        model_bytes = Path(onnx_path).read_bytes()
    else:
        raise EngineBuildError(f"unknown input form {input_form!r}: choose uint8 (prepared eyes) or float32 (normalised)")
    if not parser.parse(model_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        fix = "re-export with another --opset"
        if input_form == "uint8" and any("UINT8" in e for e in errors):
            fix = "this TensorRT takes no uint8 network inputs (needs 8.6+): build with --input-form float32 (input_form='float32')"
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {' | '.join(errors) or 'no error reported'}; {fix}")

    config = builder.create_builder_config()
    workspace = int(workspace_mib) << 20
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # pragma: no cover - TensorRT < 8.4 is not supported, kept for a clear path
        config.max_workspace_size = workspace
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise EngineBuildError("this GPU has no fast fp16: build with --precision fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise EngineBuildError(f"unknown precision {precision!r}: choose fp32 or fp16")

    profile = builder.create_optimization_profile()
    sample = input_shape(input_form, image_size)
    for name in INPUT_NAMES:
        profile.set_shape(name, (min_batch, *sample), (opt_batch, *sample), (max_batch, *sample))
    config.add_optimization_profile(profile)

    cache = None
    if timing_cache is not None and hasattr(config, "create_timing_cache"):
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            LOGGER.warning("tensorrt timing cache %s unusable; starting an empty one", timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build an engine from {onnx_path} ({precision}, batch {min_batch}-{max_batch}; see the TensorRT log): "
            "try --precision fp32, a smaller --max-batch or a larger --workspace-mib"
        )
    if cache is not None and timing_cache is not None:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:
            LOGGER.warning("cannot save tensorrt timing cache %s (%s)", timing_cache, exc)
    return bytes(memoryview(serialized))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build (or load from cache) the TensorRT engine of a model bundle", add_help=add_help)
    parser.add_argument("bundle", type=Path, help="model bundle directory (dms-net-export output)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-mib", type=int, default=1024, help="TensorRT WORKSPACE memory-pool limit")
    parser.add_argument("--engine-dir", type=Path, default=None, help="where to cache engines (default: BUNDLE/engines)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    parser.add_argument("--input-form", choices=INPUT_FORMS, default="uint8",
                        help="uint8: the node's prepared eyes, normalised on the GPU (default, what the node loads); float32: normalised input")
    parser.add_argument("--verify", action="store_true", help="compare the engine with ONNX Runtime on the same inputs")
    parser.add_argument("--left", type=Path, default=None, help="left-eye image for --verify (default: random input)")
    parser.add_argument("--right", type=Path, default=None, help="right-eye image for --verify")
    parser.add_argument("--batch", type=int, default=2, help="batch size for --verify (random inputs)")
    parser.add_argument("--tolerance", type=float, default=None, help="max probability difference for --verify (default 1e-3 fp32, 2e-2 fp16)")
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


def compare_with_onnxruntime(engine_backend: Any, reference: Any, left: np.ndarray, right: np.ndarray) -> dict[str, float]:
    left, right = check_pair(left, right, reference.image_size)
    a, b = engine_backend.infer(left, right), reference.infer(left, right)
    return {
        "probabilities": float(np.max(np.abs(a.probabilities - b.probabilities))),
        "logits": float(np.max(np.abs(a.logits - b.logits))),
        "attention": float(max(np.max(np.abs(a.attention_left - b.attention_left)), np.max(np.abs(a.attention_right - b.attention_right)))),
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
        print(f"dms-net-build-engine: error: {exc.name or exc} is not installed: install TensorRT (JetPack) and cuda-python", file=sys.stderr)
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
            left, right = verify_inputs(bundle, args.left, args.right, min(args.batch, args.max_batch), input_form=args.input_form)
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
