"""Input checks shared by every backend, so a wrong tensor fails the same way everywhere.

A wrong shape reaching ONNX Runtime or TensorRT produces a long, engine-specific error (or,
for TensorRT, silently reads the wrong memory); checking once on the host gives the user
one line that names the fix, whichever backend is loaded.
"""

from __future__ import annotations

import numpy as np


def check_pair(left: np.ndarray, right: np.ndarray, image_size: int, max_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a preprocessed batch pair; returns C-contiguous float32 arrays.

    Raises ValueError when either array is not float32 [B,3,S,S], when the two batch sizes
    differ, or when B exceeds what the loaded engine was built for.
    """
    for side, arr in (("left", left), ("right", right)):
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{side} input must be a numpy array, got {type(arr).__name__}: pass preprocess_pair(...) output")
        if arr.dtype != np.float32:
            raise ValueError(f"{side} input has dtype {arr.dtype}, expected float32: use dms_net_core.data.preprocess.preprocess_eye")
        if arr.ndim != 4 or arr.shape[1:] != (3, image_size, image_size) or arr.shape[0] < 1:
            raise ValueError(
                f"{side} input has shape {tuple(arr.shape)}, expected [B,3,{image_size},{image_size}]: "
                f"preprocess with the bundle's PreprocessConfig (image_size {image_size}) and add a batch axis"
            )
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"left batch {left.shape[0]} != right batch {right.shape[0]}: pass the same number of left and right eyes")
    if max_batch is not None and left.shape[0] > max_batch:
        raise ValueError(f"batch {left.shape[0]} exceeds the engine's max batch {max_batch}: split the batch or rebuild with a larger --max-batch")
    return np.ascontiguousarray(left), np.ascontiguousarray(right)
