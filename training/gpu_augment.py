"""Batched augmentation and normalisation on the training device (GPU or CPU).

The same recipe as `dms_net_core.data.augment` (see its docstring for CutMix's same-label
rule and the same-box-for-both-eyes choice), as whole-batch torch ops so the GPU never
waits for a CPU pipeline: per-sample flips, rotation/scale through ONE `affine_grid` +
`grid_sample` call, brightness/contrast/saturation jitter, CutMix with a same-label-set
partner. Each eye draws its own flips/affine/colour (the two photographs were taken
separately); the CutMix box is shared by both eyes.

`normalize_batch` applies `dms_net_core.data.normalize_torch`, the device-side twin of
`preprocess.normalize` the torch backend uses too, so the trainer's eval transform equals
`preprocess_eye` (a test holds them equal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dms_net_core.data.augment import AugmentConfig
from dms_net_core.data.normalize_torch import normalisation_constants, normalize_float255, to_float_nchw
from dms_net_core.data.preprocess import PreprocessConfig


def normalize_batch(x255: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """[B,3,S,S] float32 in [0,255] -> normalised, exactly like `preprocess.normalize`."""
    return normalize_float255(x255, *normalisation_constants(cfg, x255.device))


def _affine(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    dev = x.device
    u = torch.rand(b, 4, generator=gen, device="cpu").to(dev)
    angle = (u[:, 0] * 2 - 1) * math.radians(cfg.rotation_deg)
    scale = cfg.scale[0] + u[:, 1] * (cfg.scale[1] - cfg.scale[0])
    sx = torch.where(u[:, 2] < cfg.hflip, -1.0, 1.0)
    sy = torch.where(u[:, 3] < cfg.vflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx
    theta[:, 1, 1] = cos * sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _colour(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    u = (torch.rand(b, 3, generator=gen, device="cpu").to(x.device) * 2 - 1).view(b, 3, 1, 1, 1)
    x = x * (1 + u[:, 0] * cfg.brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + u[:, 1] * cfg.contrast) + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (1 + u[:, 2] * cfg.saturation) + gray
    return x.clamp_(0, 255)


def same_label_partners(labels: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """For each row, a random OTHER row with the identical label vector (itself if none)."""
    b = labels.shape[0]
    lab = labels.to("cpu")
    same = (lab[:, None, :] == lab[None, :, :]).all(-1)
    same.fill_diagonal_(False)
    scores = torch.rand(b, b, generator=gen) * same  # random among same-label rows, 0 elsewhere
    partner = scores.argmax(dim=1)
    has = same.any(dim=1)
    return torch.where(has, partner, torch.arange(b)).to(labels.device)


def cutmix_same_label(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig,
                      gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a partner's box into each sample (prob ``cfg.cutmix_prob``); labels unchanged."""
    b, _, s, _ = left.shape
    partner = same_label_partners(labels, gen)
    u = torch.rand(b, 4, generator=gen)
    apply = (u[:, 0] < cfg.cutmix_prob) & (partner.cpu() != torch.arange(b))
    if not apply.any():
        return left, right
    side = (s * torch.sqrt(cfg.cutmix_area[0] + u[:, 1] * (cfg.cutmix_area[1] - cfg.cutmix_area[0]))).long().clamp(1, s)
    y0 = (u[:, 2] * (s - side + 1).float()).long()
    x0 = (u[:, 3] * (s - side + 1).float()).long()
    ar = torch.arange(s)
    rows = (ar[None, :] >= y0[:, None]) & (ar[None, :] < (y0 + side)[:, None])
    cols = (ar[None, :] >= x0[:, None]) & (ar[None, :] < (x0 + side)[:, None])
    box = (rows[:, :, None] & cols[:, None, :] & apply[:, None, None]).to(left.device)[:, None]
    partner = partner.to(left.device)
    left = torch.where(box, left[partner], left)
    right = torch.where(box, right[partner], right)
    return left, right


def augment_batch(left_u8: torch.Tensor, right_u8: torch.Tensor, labels: torch.Tensor, aug: AugmentConfig,
                  pre: PreprocessConfig, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B,S,S,3] pairs -> augmented, normalised float32 [B,3,S,S] pairs."""
    left, right = to_float_nchw(left_u8), to_float_nchw(right_u8)
    if aug.cutmix_prob > 0:
        left, right = cutmix_same_label(left, right, labels, aug, gen)
    return _augment_float(left, aug, pre, gen), _augment_float(right, aug, pre, gen)


def _augment_float(x255: torch.Tensor, aug: AugmentConfig, pre: PreprocessConfig,
                   gen: torch.Generator | None) -> torch.Tensor:
    return normalize_batch(_colour(_affine(x255, aug, gen), aug, gen), pre)


def augment_eyes(eyes_u8: torch.Tensor, aug: AugmentConfig, pre: PreprocessConfig,
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """One eye per row (no CutMix, which needs the pair): uint8 [B,S,S,3] -> augmented,
    normalised float32 [B,3,S,S]; what the training feature bank stores views of."""
    return _augment_float(to_float_nchw(eyes_u8), aug, pre, gen)


def eval_eyes(eyes_u8: torch.Tensor, pre: PreprocessConfig) -> torch.Tensor:
    """The eval transform of single eyes: only normalisation (equal to `preprocess_eye`)."""
    return normalize_batch(to_float_nchw(eyes_u8), pre)


def eval_batch(left_u8: torch.Tensor, right_u8: torch.Tensor,
               pre: PreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval transform: only normalisation (equal to `preprocess_eye` on the same image)."""
    return eval_eyes(left_u8, pre), eval_eyes(right_u8, pre)
