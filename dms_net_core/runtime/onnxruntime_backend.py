"""ONNX Runtime backend: the torch-free default on robots without TensorRT.

Runs the bundle's ``model.onnx`` as exported (fp32). Session options are tuned for a
latency-bound node serving one exam at a time: all graph optimisations, sequential
execution, and as many intra-op threads as *physical* cores (hyper-threads slow the
convolutions down). CUDAExecutionProvider is used when the installed onnxruntime has it
and the device allows; inputs live on the host, so no IO binding is needed on CPU.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dms_net_core.bundle import ModelBundle
from dms_net_core.postprocess import eye_probabilities, sigmoid
from dms_net_core.runtime.base import InferenceBackend, InferenceResult
from dms_net_core.runtime.inputs import check_pair, float_pair, warmup_pair

LOGGER = logging.getLogger("dms_net_core.runtime")


def physical_cores() -> int:
    """Physical core count (psutil when present), at least 1."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is in requirements/test.txt only
        n = None
    import os

    return max(1, n or os.cpu_count() or 1)


class OnnxRuntimeBackend(InferenceBackend):
    """`InferenceBackend` over an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"

    def __init__(self, bundle: ModelBundle, device: str = "auto", precision: str = "fp32",
                 intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        if precision != "fp32":
            raise ValueError(f"onnxruntime backend runs the fp32 ONNX graph, precision {precision!r} requested: "
                             "use precision='fp32' or the tensorrt/torch backend for fp16")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}: choose auto, cpu or cuda")
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError("this onnxruntime has no CUDAExecutionProvider: "
                               "install onnxruntime-gpu or use device='cpu'")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = intra_op_threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise

        self.bundle = bundle
        self.image_size = bundle.image_size
        self.precision = "fp32"
        self.session = ort.InferenceSession(str(bundle.onnx_path), sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.output_names = [o.name for o in self.session.get_outputs()]
        if "logits" not in self.output_names:
            raise RuntimeError(f"{bundle.onnx_path} has outputs {self.output_names}, not 'logits': "
                               "re-export the bundle")
        self.intra_op_threads = opts.intra_op_num_threads

    def infer(self, left: np.ndarray, right: np.ndarray) -> InferenceResult:
        left, right = check_pair(left, right, self.image_size)
        t0 = time.perf_counter()
        left, right = float_pair(left, right, self.bundle.preprocess)
        values = self.session.run(self.output_names, {"left": left, "right": right})
        t1 = time.perf_counter()
        out = dict(zip(self.output_names, values))
        logits = np.asarray(out["logits"], dtype=np.float32)
        return InferenceResult(
            probabilities=sigmoid(logits),
            logits=logits,
            attention_left=out.get("attention_left"),
            attention_right=out.get("attention_right"),
            timings_ms={"inference": (t1 - t0) * 1e3},
            **eye_probabilities(out),
            cam_left=out.get("cam_left"),
            cam_right=out.get("cam_right"),
        )

    def warmup(self, iterations: int = 2, dtype: str = "uint8") -> None:
        pair = warmup_pair(1, self.image_size, dtype)
        for _ in range(iterations):
            self.infer(*pair)

    def describe(self) -> str:
        return (f"onnxruntime {self.device} fp32 providers={','.join(self.providers)} "
                f"threads={self.intra_op_threads} model={self.bundle.model_id}")

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
