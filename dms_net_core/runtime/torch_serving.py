"""The module the PyTorch backend runs, captures or compiles: normalise, model, pack.

Why a wrapper instead of calling the model directly: at batch 1 on a GPU the work *around*
the network costs as much as the heads. Before this, every pair paid for two float32 host
copies (2 x 3 x S x S x 4 bytes, 4.8 MB at 448 px), two eager cast and layout kernels, and
three synchronising device->host copies with their own cast kernels. Here

- prepared uint8 eyes ([B,S,S,3], the camera's own layout) cross to the device at a quarter
  of the bytes and are normalised *inside* the CUDA graph / compiled region; the NHWC -> NCHW
  permute of a uint8 NHWC tensor is already channels_last, so no layout copy is made;
- the outputs leave as one float32 tensor ``[B, K + 2*h*w]`` (logits, then both attention
  maps; ``[B, 3K + 2*h*w]`` with the per-eye logits after the patient's for a model with
  per-eye heads, and ``2*K*h*w`` more for the class activation maps of a bundle that has
  them) with one device->host copy, which `unpack_outputs` splits on the host;
- with ``attention_outputs=False`` (a node that does not publish overlays) the maps (attention
  and CAMs) are left out of the packed tensor: no flatten/cast/concat of them, a smaller copy,
  and no CAM convolution. OSIM still computes its maps (its features are multiplied by them);
  only their way out is saved.

The normalisation is `dms_net_core.data.normalize_torch` (shared with the trainer's GPU
pipeline), bit-identical on the CPU to host preprocessing (a test holds it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dms_net_core.data.normalize_torch import normalisation_constants, normalize_float255, to_float_nchw
from dms_net_core.data.preprocess import PreprocessConfig


class ServingModel(nn.Module):
    """``forward(left, right)`` on uint8 [B,S,S,3] or float [B,3,S,S] -> packed float32 outputs."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig, dtype: torch.dtype, device: torch.device,
                 attention_outputs: bool = True, cams: bool = False) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.attention_outputs = attention_outputs
        #: append the class activation maps (the bundle has them, `ModelBundle.has_cams`)
        self.cams = bool(cams) and attention_outputs
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        scale, mean, std = normalisation_constants(preprocess, device)
        self.register_buffer("scale", scale)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,S,S,3] -> the model's dtype [B,3,S,S] in its memory format."""
        x = normalize_float255(to_float_nchw(images), self.scale, self.mean, self.std).to(self.dtype)
        return x.contiguous(memory_format=self.memory_format)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        if left.dtype == torch.uint8:
            left, right = self.normalise(left), self.normalise(right)
        if self.cams:
            logits, attention_left, attention_right, *eye_logits, cam_left, cam_right = self.model(
                left, right, with_cams=True
            )
        else:
            logits, attention_left, attention_right, *eye_logits = self.model(left, right)
        maps = (attention_left.flatten(1), attention_right.flatten(1)) if self.attention_outputs else ()
        if self.cams:
            maps = (*maps, cam_left.flatten(1), cam_right.flatten(1))
        if not eye_logits and not maps:
            return logits.float()
        return torch.cat([t.float() for t in (logits, *eye_logits, *maps)], dim=1)


def unpack_outputs(packed: np.ndarray, num_classes: int, per_eye: bool = False,
                   attention: bool = True, cams: bool = False) -> dict[str, np.ndarray | None]:
    """[B, K(+2K) + 2*h*w (+2*K*h*w)] -> named outputs: ``logits`` [B,K], ``attention_left/right``
    [B,1,h,w] (None when ``attention`` is False: the width then holds the logits only),
    ``left_logits``/``right_logits`` [B,K] when ``per_eye``, and ``cam_left``/``cam_right``
    [B,K,h,w] when ``cams`` (and ``attention``).

    The maps are square (square input, any CNN backbone), so h = w = sqrt(area).
    """
    heads = num_classes * (3 if per_eye else 1)
    if not attention:
        if packed.shape[1] != heads:
            raise RuntimeError(f"packed output width {packed.shape[1]} is not the {heads} logits of a model "
                               "without attention outputs: the model does not fit its bundle")
        out: dict[str, np.ndarray | None] = {"logits": packed[:, :num_classes], "attention_left": None,
                                             "attention_right": None}
        if per_eye:
            out["left_logits"] = packed[:, num_classes : 2 * num_classes]
            out["right_logits"] = packed[:, 2 * num_classes : heads]
        return out
    per_area = 2 * (1 + (num_classes if cams else 0))  # values per feature position: both eyes' maps
    area = (packed.shape[1] - heads) // per_area
    side = math.isqrt(area)
    if area <= 0 or side * side != area or packed.shape[1] != heads + per_area * area:
        what = "two square attention maps" + (f" and two {num_classes}-class activation maps" if cams else "")
        raise RuntimeError(f"packed output width {packed.shape[1]} does not hold {heads} logits and {what}: "
                           "the model does not fit its bundle")
    batch = packed.shape[0]
    out = {"logits": packed[:, :num_classes]}
    if per_eye:
        out["left_logits"] = packed[:, num_classes : 2 * num_classes]
        out["right_logits"] = packed[:, 2 * num_classes : heads]
    out["attention_left"] = packed[:, heads : heads + area].reshape(batch, 1, side, side)
    out["attention_right"] = packed[:, heads + area : heads + 2 * area].reshape(batch, 1, side, side)
    if cams:
        start, size = heads + 2 * area, num_classes * area
        out["cam_left"] = packed[:, start : start + size].reshape(batch, num_classes, side, side)
        out["cam_right"] = packed[:, start + size : start + 2 * size].reshape(batch, num_classes, side, side)
    return out
