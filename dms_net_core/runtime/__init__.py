"""Inference runtimes behind one interface, and the factory that picks one.

``create_backend(bundle, backend="auto")`` tries TensorRT, then ONNX Runtime, then
PyTorch, and logs (logger ``dms_net_core.runtime``) which one it chose and why each earlier
one was skipped, e.g. ``tensorrt: module not installed``. The node reports
`InferenceBackend.describe` in /diagnostics so the operator sees what actually runs.

Nothing here imports torch or tensorrt at import time: each backend imports its engine
when constructed, so a torch-free robot can still load the ONNX Runtime backend.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

from dms_net_core.bundle import ModelBundle
from dms_net_core.errors import first_line
from dms_net_core.runtime.base import InferenceBackend, InferenceResult

LOGGER = logging.getLogger("dms_net_core.runtime")

BACKENDS = ("tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
#: the PyTorch backend's GPU accelerations by one name (a node or CLI parameter) -> its options.
#: compile_cudagraphs was the fastest for one pair on an H200 (benchmarks/RESULTS.md section 4).
TORCH_ACCELERATIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "cuda_graph": {"cuda_graph": True},
    "compile": {"compile": True},
    "compile_cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
}


def torch_acceleration_options(name: str) -> dict[str, Any]:
    """Backend options for a ``TORCH_ACCELERATIONS`` name; a one-line error for any other."""
    if name not in TORCH_ACCELERATIONS:
        raise ValueError(f"unknown torch acceleration {name!r}: choose one of {', '.join(TORCH_ACCELERATIONS)}")
    return dict(TORCH_ACCELERATIONS[name])

#: pip requirement to suggest when a backend's module is missing
_INSTALL_HINT = {
    "tensorrt": "install TensorRT (JetPack on Jetson, `pip install tensorrt` + cuda-python on x86)",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "torch": "pip install torch",
}


def _backend_class(name: str) -> type[InferenceBackend]:
    if name == "tensorrt":
        from dms_net_core.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend
    if name == "onnxruntime":
        from dms_net_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "torch":
        from dms_net_core.runtime.torch_backend import TorchBackend

        return TorchBackend
    raise ValueError(f"unknown backend {name!r}: choose auto, {', '.join(BACKENDS)}")


def _accepted_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def _reason(exc: BaseException) -> str:
    """One line saying why a backend could not be used."""
    if isinstance(exc, ImportError):
        mod = getattr(exc, "name", None) or str(exc)
        root = mod.split(".")[0] if isinstance(mod, str) else mod
        return f"module {root!r} not installed"
    return first_line(exc)


def create_backend(
    bundle: ModelBundle | str | os.PathLike,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "fp32",
    **options: Any,
) -> InferenceBackend:
    """Load ``bundle`` on the requested engine.

    ``backend="auto"`` tries TensorRT -> ONNX Runtime -> PyTorch and returns the first that
    loads; when ONNX Runtime has no CUDA provider but torch sees a GPU, torch comes before
    ONNX Runtime (a CPU session is ~10x slower than the GPU it would leave idle). In ``auto``
    mode an engine that cannot run fp16 (ONNX Runtime; torch on CPU) is used in fp32 with a
    log line rather than skipped, so a node configured for fp16 on a GPU still comes up on a
    CPU-only machine. Backend-specific ``options`` (e.g. ``workspace_mib`` for TensorRT,
    ``cuda_graph`` for torch) go to the backends that accept them. Raises RuntimeError
    listing every backend's reason when none loads.
    """
    if not isinstance(bundle, ModelBundle):
        bundle = ModelBundle.load(Path(bundle))
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")

    if backend != "auto":
        try:
            cls = _backend_class(backend)
            unknown = sorted(set(options) - set(_accepted_options(cls, options)))
            if unknown:
                raise ValueError(f"backend {backend!r} does not take options {unknown}: remove them")
            instance = cls(bundle, device=device, precision=precision, **options)
        except ImportError as exc:  # the engine's module is missing: name the fix, like every configure error
            others = ", ".join(b for b in BACKENDS if b != backend)
            raise RuntimeError(f"backend {backend!r} cannot load: {_reason(exc)}: {_INSTALL_HINT[backend]}, "
                               f"or choose backend auto (tries {', '.join(BACKENDS)}) or one of {others}") from exc
        LOGGER.info("inference backend: %s", instance.describe())
        return instance

    skipped: list[str] = []
    order = list(BACKENDS)
    if device != "cpu" and not _onnxruntime_has_cuda() and _torch_cuda_available():
        # measured on an H200 (ResNet-152 @ 448): ONNX Runtime on CPU 159 ms vs torch CUDA 15 ms per pair
        order = ["tensorrt", "torch", "onnxruntime"]
        LOGGER.info("onnxruntime has no CUDA provider but torch sees a GPU: trying torch before onnxruntime")
    for name in order:
        if name == "tensorrt" and device == "cpu":
            skipped.append("tensorrt: device='cpu' requested")
            LOGGER.info("skipping %s", skipped[-1])
            continue
        try:
            cls = _backend_class(name)
            prec = precision
            if precision == "fp16" and name == "onnxruntime":
                prec = "fp32"
                LOGGER.info("onnxruntime runs the fp32 ONNX graph "
                            "(fp16 requested; fp16 needs tensorrt or torch on CUDA)")
            if precision == "fp16" and name == "torch" and not _torch_cuda_available():
                prec = "fp32"
                LOGGER.info("torch has no CUDA device: running fp32 instead of the requested fp16")
            instance = cls(bundle, device=device, precision=prec, **_accepted_options(cls, options))
        except Exception as exc:  # noqa: BLE001 - every failure means "try the next backend"
            skipped.append(f"{name}: {_reason(exc)}")
            # a missing module is an expected deployment choice; a failing one is worth a warning
            LOGGER.log(logging.INFO if isinstance(exc, ImportError) else logging.WARNING, "skipping %s", skipped[-1])
            continue
        LOGGER.info(
            "inference backend: chose %s (%s)%s",
            name,
            instance.describe(),
            "; skipped " + "; ".join(skipped) if skipped else "",
        )
        return instance
    hints = "; ".join(f"{n}: {_INSTALL_HINT[n]}" for n in BACKENDS)
    raise RuntimeError(f"no inference backend could load {bundle.path} ({' | '.join(skipped)}): {hints}")


def _onnxruntime_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


__all__ = ["BACKENDS", "TORCH_ACCELERATIONS", "InferenceBackend", "InferenceResult", "create_backend",
           "torch_acceleration_options"]
