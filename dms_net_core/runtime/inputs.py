"""Input checks shared by every backend, so a wrong tensor fails the same way everywhere.

Every backend takes a pair of batches in one of two forms:

- **prepared uint8** ``[B,S,S,3]`` RGB: the eye after cropping, resizing and (optional)
  illumination correction, *before* normalisation (`prepare_eye_uint8`). The backend
  normalises it with the bundle's mean/std. The PyTorch backend does that on the GPU, inside
  its CUDA graph or compiled region, so a pair crosses the PCIe bus as 2 x S*S*3 bytes instead
  of 4x as many float32 bytes; ONNX Runtime and TensorRT normalise on the host with the same
  table as `normalize`, so both forms give the same numbers on every backend. The node uses
  this form.
- **normalised float32** ``[B,3,S,S]`` (`preprocess_eye`): what training, evaluation and the
  exported ONNX graph see.

A wrong shape reaching ONNX Runtime or TensorRT produces a long, engine-specific error (or,
for TensorRT, silently reads the wrong memory); checking once on the host gives the user
one line that names the fix, whichever backend is loaded.
"""

from __future__ import annotations

import numpy as np

from dms_net_core.data.preprocess import PreprocessConfig, normalize_batch

#: the two input forms: "uint8" prepared eyes [B,S,S,3] (the node's), "float32" normalised [B,3,S,S]
INPUT_FORMS = ("uint8", "float32")


def input_shape(form: str, image_size: int) -> tuple[int, int, int]:
    """Per-sample shape of an input form: (S,S,3) for uint8, (3,S,S) for float32."""
    if form not in INPUT_FORMS:
        raise ValueError(f"unknown input form {form!r}: choose uint8 (prepared eyes) or float32 (normalised)")
    return (image_size, image_size, 3) if form == "uint8" else (3, image_size, image_size)


def is_prepared_uint8(arr: np.ndarray) -> bool:
    """True for the prepared-uint8 form ``[B,S,S,3]`` (dtype decides; shapes are checked by `check_pair`)."""
    return arr.dtype == np.uint8


def _check_one(side: str, arr: object, image_size: int) -> None:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{side} input must be a numpy array, got {type(arr).__name__}: "
                         "pass prepare_eye_uint8(...) or preprocess_eye(...) output with a batch axis")
    s = image_size
    if arr.dtype == np.uint8:
        if arr.ndim != 4 or arr.shape[1:] != input_shape("uint8", s) or arr.shape[0] < 1:
            raise ValueError(
                f"{side} uint8 input has shape {tuple(arr.shape)}, expected prepared RGB images [B,{s},{s},3]: "
                "prepare with dms_net_core.data.preprocess.prepare_eye_uint8 and the bundle's PreprocessConfig, "
                "and add a batch axis"
            )
    elif arr.dtype == np.float32:
        if arr.ndim != 4 or arr.shape[1:] != input_shape("float32", s) or arr.shape[0] < 1:
            raise ValueError(
                f"{side} input has shape {tuple(arr.shape)}, expected [B,3,{s},{s}]: "
                f"preprocess with the bundle's PreprocessConfig (image_size {s}) and add a batch axis"
            )
    else:
        raise ValueError(
            f"{side} input has dtype {arr.dtype}, expected uint8 [B,S,S,3] or float32 [B,3,S,S]: "
            "use dms_net_core.data.preprocess.prepare_eye_uint8 or preprocess_eye"
        )


def check_pair(left: np.ndarray, right: np.ndarray, image_size: int,
               max_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of batches in either form (module docstring); returns C-contiguous arrays.

    Raises ValueError when either array is neither uint8 [B,S,S,3] nor float32 [B,3,S,S], when
    the two eyes differ in form or batch size, or when B exceeds what the loaded engine was
    built for.
    """
    _check_one("left", left, image_size)
    _check_one("right", right, image_size)
    if left.dtype != right.dtype:
        raise ValueError(f"left is {left.dtype} but right is {right.dtype}: "
                         "pass both eyes in the same form (both prepared uint8 or both float32)")
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"left batch {left.shape[0]} != right batch {right.shape[0]}: "
                         "pass the same number of left and right eyes")
    if max_batch is not None and left.shape[0] > max_batch:
        raise ValueError(f"batch {left.shape[0]} exceeds the engine's max batch {max_batch}: "
                         "split the batch or rebuild with a larger --max-batch")
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


def float_pair(left: np.ndarray, right: np.ndarray, preprocess: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """A checked pair as the float32 [B,3,S,S] the ONNX graph takes: prepared uint8 is normalised
    on the host (bit-identical to `preprocess_eye`), float32 passes through untouched."""
    if is_prepared_uint8(left):
        return normalize_batch(left, preprocess), normalize_batch(right, preprocess)
    return left, right


def warmup_pair(batch: int, image_size: int, dtype: str = "uint8") -> tuple[np.ndarray, np.ndarray]:
    """A zero pair in the given form, for `InferenceBackend.warmup`."""
    x = np.zeros((batch, *input_shape(dtype, image_size)), dtype=dtype)
    return x, x


def random_pair(batch: int, image_size: int, form: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random pair in the given form (benchmarks, engine verification): uniform uint8
    pixels, or standard-normal float32 (the scale of normalised input)."""
    rng = np.random.default_rng(seed)
    shape = (batch, *input_shape(form, image_size))
    if form == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
