"""`preprocess.normalize` on torch tensors, on any device: one definition for the trainer's GPU
pipeline (`training.gpu_augment`) and the torch backend's serving graph (`runtime.torch_serving`).

Same float32 operations in the same order as the host table (``v * (1/255) - mean) / std``), so
on the CPU the result is bit-identical to `preprocess_eye` (tests hold both users to it). The
constants are tensors on the target device: inside a CUDA graph a host->device copy of a
Python list could not be captured.
"""

from __future__ import annotations

import numpy as np
import torch

from dms_net_core.data.preprocess import PreprocessConfig


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,S,S,3] -> float32 [B,3,S,S] in [0,255] (channels_last strides: no copy of the layout)."""
    return images.permute(0, 3, 1, 2).to(torch.float32)


def normalisation_constants(cfg: PreprocessConfig,
                            device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale 1/255 as a 0-dim tensor, mean [1,3,1,1], std [1,3,1,1]), float32 on ``device``."""
    scale = torch.tensor(np.float32(1.0 / 255.0), device=device)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return scale, mean, std


def normalize_float255(x255: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 [B,3,S,S] in [0,255] -> normalised, exactly like `preprocess.normalize`."""
    return (x255 * scale - mean) / std
