"""The one inference interface every backend (TensorRT, ONNX Runtime, PyTorch) implements.

Callers hand over a pair of batches ``left``/``right``, either prepared uint8 [B,S,S,3] eyes
(the backend normalises them; the node's form) or normalised float32 [B,3,S,S] (see
`dms_net_core.runtime.inputs`), and get an `InferenceResult` back whatever the backend, so
the node, the bag tools and the benchmarks never branch on the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from dms_net_core.runtime.inputs import INPUT_FORMS


@dataclass
class InferenceResult:
    """Outputs of one batch; all arrays are numpy on the host."""

    probabilities: np.ndarray  # [B, 8] float32 (sigmoid of logits)
    logits: np.ndarray  # [B, 8] float32
    attention_left: np.ndarray | None  # [B, 1, h, w] float32 in [0,1], OSIM spatial attention
    attention_right: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)  # at least "inference"
    #: [B, 8] float32 per-eye probabilities (each eye's own findings), for bundles whose model
    #: has per-eye heads (``model_config.per_eye_heads``); None otherwise
    left_probabilities: np.ndarray | None = None
    right_probabilities: np.ndarray | None = None
    #: [B, 8, h, w] float32 class activation maps of the per-eye head (logit-valued; the mean over
    #: h, w is the eye's logit), for bundles exported with them (`ModelBundle.has_cams`); None otherwise
    cam_left: np.ndarray | None = None
    cam_right: np.ndarray | None = None


class InferenceBackend(ABC):
    """A loaded model ready to run; construct through `dms_net_core.runtime.create_backend`."""

    #: "tensorrt", "onnxruntime" or "torch"
    name: str = "abstract"
    #: the input forms `infer` accepts: "uint8" (prepared eyes [B,S,S,3], the node's) and/or
    #: "float32" (normalised [B,3,S,S]); a TensorRT engine built for uint8 takes only uint8
    input_forms: tuple[str, ...] = INPUT_FORMS

    @abstractmethod
    def infer(self, left: np.ndarray, right: np.ndarray) -> InferenceResult:
        """Run one batch. Raises ValueError (one line, naming the fix) on a wrong shape."""

    def warmup(self, iterations: int = 2, dtype: str = "uint8") -> None:
        """Run dummy batches so the first real exam is not slowed by lazy initialisation.

        ``dtype`` is the input form the caller will send ("uint8" prepared eyes or "float32"):
        a CUDA graph or compiled region exists per form, so warm the one that will be used.
        """

    def describe(self) -> str:
        """One line for logs and /diagnostics: backend, device, precision, engine file."""
        return self.name

    def close(self) -> None:
        """Release sessions, engines and device memory."""
