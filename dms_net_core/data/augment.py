"""Training augmentation in numpy/OpenCV (torch-free; the batched GPU version of the same
recipe lives in `training.gpu_augment`).

CutMix within a label set (the paper's "Data process": "integrate local regions of
homogeneous samples while preserving original class labels"): a box from patient B is
pasted into patient A only when A and B carry the SAME label set, so the label vector
stays exactly A's (no label mixing, unlike the original CutMix). The SAME relative box is
used for both eyes: labels are per patient, left and right images are roughly mirror
images of one another, and the binocular modules (CASFM, CCAM, CIAM) compare the two eyes
region by region - pasting different regions per eye would teach the model that the
eyes' spatial correspondence is arbitrary. (Fundus left/right mirror symmetry would argue
for a mirrored box; we keep the same box because the left-right flip augmentation below
already randomises orientation per eye.)

Geometric / photometric: horizontal and vertical flips, rotation (+-20 deg, the fundus is a
disc so any rotation is plausible), scale 0.9-1.1, brightness/contrast/saturation jitter.
Black borders from rotation/scale stay black, like the image outside the FOV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """One place for the augmentation recipe (also read by the GPU version)."""

    hflip: float = 0.5
    vflip: float = 0.5
    rotation_deg: float = 20.0
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    cutmix_prob: float = 0.5
    cutmix_area: tuple[float, float] = (0.1, 0.4)  # box area as a fraction of the image


def cutmix_box(size: int, rng: np.random.Generator, area: tuple[float, float]) -> tuple[int, int, int, int]:
    """A random square-ish box ``(y0, y1, x0, x1)`` covering ``area`` of a size x size image."""
    frac = rng.uniform(*area)
    side = int(round(size * np.sqrt(frac)))
    side = max(1, min(size, side))
    y0 = int(rng.integers(0, size - side + 1))
    x0 = int(rng.integers(0, size - side + 1))
    return y0, y0 + side, x0, x0 + side


def same_label_partners(label_keys: list[str], rng: np.random.Generator) -> np.ndarray:
    """For each sample, the index of a DIFFERENT sample with the same label set, or itself
    when it is the only one of its label set (then CutMix is a no-op for it)."""
    partners = np.arange(len(label_keys))
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(label_keys):
        groups.setdefault(k, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            others = [j for j in members if j != i]
            partners[i] = others[int(rng.integers(len(others)))]
    return partners


def cutmix_same_label(
    left: np.ndarray,
    right: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    prob: float = 0.5,
    area: tuple[float, float] = (0.1, 0.4),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CutMix on a batch of pairs ``left/right [B,S,S,3] uint8``, ``labels [B,8]``.

    Returns new arrays; labels are returned unchanged (a copy) because partners share them.
    """
    left, right = left.copy(), right.copy()
    keys = ["".join(map(str, row.astype(int))) for row in labels]
    partners = same_label_partners(keys, rng)
    src_l, src_r = left.copy(), right.copy()
    size = left.shape[1]
    for i, j in enumerate(partners):
        if j == i or rng.random() >= prob:
            continue
        y0, y1, x0, x1 = cutmix_box(size, rng, area)
        left[i, y0:y1, x0:x1] = src_l[j, y0:y1, x0:x1]
        right[i, y0:y1, x0:x1] = src_r[j, y0:y1, x0:x1]
    return left, right, labels.copy()


def augment_eye(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Flips, rotation/scale and colour jitter of one prepared uint8 SxSx3 eye image."""
    out = img
    if rng.random() < cfg.hflip:
        out = out[:, ::-1]
    if rng.random() < cfg.vflip:
        out = out[::-1]
    s = out.shape[0]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = rng.uniform(*cfg.scale)
    m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), angle, scale)
    out = cv2.warpAffine(np.ascontiguousarray(out), m, (s, s), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    x = out.astype(np.float32)
    x *= 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = x.mean()
    x = (x - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * (1.0 + rng.uniform(-cfg.saturation, cfg.saturation)) + gray
    return np.clip(x, 0, 255).astype(np.uint8)
