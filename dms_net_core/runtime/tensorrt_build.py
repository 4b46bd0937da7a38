"""TensorRT engine building: ONNX (or the prepared-uint8 graph) -> serialized engine bytes.

The library half of engine building, used by `tensorrt_backend` (which builds on a cache
miss) and by the ``dms-net-build-engine`` command (`build_engine`). It imports neither, so
the backend and the command both depend on it and not on each other.

The build follows NVIDIA's documented TensorRT Python flow: ``trt.Builder`` -> network
(EXPLICIT_BATCH flag on TensorRT 8.x, default flags on 10.x) -> ``trt.OnnxParser`` (errors
listed) -> builder config with the WORKSPACE memory-pool limit, FP16 when requested and
``platform_has_fast_fp16``, one optimization profile (min/opt/max batch for "left" and
"right") and a persistent timing cache -> ``build_serialized_network``.
Nothing in this repository has run against real TensorRT; see runtime/README.md.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from dms_net_core.bundle import INPUT_NAMES
from dms_net_core.runtime.inputs import input_shape

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
        raise EngineBuildError(f"batch range min {min_batch} <= opt {opt_batch} <= max {max_batch} violated: "
                               "fix --min/--opt/--max-batch")
    logger = logger or make_trt_logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it.
    flags = 0 if trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if input_form == "uint8":
        if preprocess is None:
            raise EngineBuildError("a uint8-input engine needs the bundle's PreprocessConfig (mean/std): "
                                   "pass preprocess=bundle.preprocess")
        from dms_net_core.runtime.prepared_input_onnx import prepared_input_model

        model_bytes = prepared_input_model(onnx_path, preprocess)
    elif input_form == "float32":
        model_bytes = Path(onnx_path).read_bytes()
    else:
        raise EngineBuildError(f"unknown input form {input_form!r}: "
                               "choose uint8 (prepared eyes) or float32 (normalised)")
    if not parser.parse(model_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        fix = "re-export with another --opset"
        if input_form == "uint8" and any("UINT8" in e for e in errors):
            fix = ("this TensorRT takes no uint8 network inputs (needs 8.6+): "
                   "build with --input-form float32 (input_form='float32')")
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
            f"TensorRT failed to build an engine from {onnx_path} ({precision}, batch {min_batch}-{max_batch}; "
            "see the TensorRT log): "
            "try --precision fp32, a smaller --max-batch or a larger --workspace-mib"
        )
    if cache is not None and timing_cache is not None:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:
            LOGGER.warning("cannot save tensorrt timing cache %s (%s)", timing_cache, exc)
    return bytes(memoryview(serialized))
