"""Tiny synthetic fundus-like images and labels for fast unit tests (no real data needed).

A bright orange disc on black with a few dark "vessels" and a pale optic disc; each class
leaves a crude visible trace (so a model CAN learn it in a smoke test): D dots, G a larger
optic-disc cup, C global haze, A macular spot, H thin vessels, M a pale crescent, O a stripe.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dms_net_core.classes import CLASS_CODES, NUM_CLASSES


def synthetic_fundus(labels: np.ndarray, size: int = 128, seed: int = 0, eye: str = "left") -> np.ndarray:
    """One RGB uint8 size x size fundus-like image carrying ``labels`` [8]."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    c, r = size // 2, int(size * 0.45)
    cv2.circle(img, (c, c), r, (int(rng.integers(170, 210)), int(rng.integers(70, 100)), 30), -1)
    od_x = int(c + (0.45 if eye == "right" else -0.45) * r)
    cup = 0.2 if labels[2] else 0.1
    cv2.circle(img, (od_x, c), max(2, int(0.18 * r)), (240, 200, 120), -1)
    cv2.circle(img, (od_x, c), max(1, int(cup * r)), (255, 240, 200), -1)
    thick = 1 if labels[5] else max(1, size // 64)
    for k in range(4):
        ang = rng.uniform(0, 2 * np.pi)
        end = (int(c + np.cos(ang) * r * 0.9), int(c + np.sin(ang) * r * 0.9))
        cv2.line(img, (od_x, c), end, (120, 30, 20), thick)
    if labels[1]:
        for _ in range(12):
            p = rng.integers(c - r // 2, c + r // 2, 2)
            cv2.circle(img, (int(p[0]), int(p[1])), max(1, size // 80), (90, 10, 10), -1)
    if labels[4]:
        cv2.circle(img, (c, c), max(2, size // 14), (230, 220, 90), -1)
    if labels[6]:
        cv2.ellipse(img, (od_x, c), (int(0.3 * r), int(0.3 * r)), 0, 90, 270, (250, 230, 200), max(1, size // 40))
    if labels[7]:
        cv2.line(img, (c - r // 2, c + r // 3), (c + r // 2, c + r // 3), (60, 60, 60), max(1, size // 40))
    if labels[3]:
        img = cv2.addWeighted(cv2.GaussianBlur(img, (0, 0), size / 40), 0.7, np.full_like(img, 200), 0.3, 0)
        img[img.max(axis=2) < 60] = 0
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise * (img > 0), 0, 255).astype(np.uint8)


def synthetic_labels(n: int, seed: int = 0) -> np.ndarray:
    """n x 8 uint8 multi-label matrix with ODIR-like structure (N exclusive of diseases)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, NUM_CLASSES), np.uint8)
    for i in range(n):
        if rng.random() < 0.35:
            y[i, 0] = 1
        else:
            y[i, rng.integers(1, NUM_CLASSES)] = 1
            if rng.random() < 0.2:
                y[i, rng.integers(1, NUM_CLASSES)] = 1
    return y


def write_synthetic_dataset(out_dir: str | Path, n: int = 16, size: int = 128, seed: int = 0) -> Path:
    """Write ``images/<id>_<left|right>.jpg`` + ``labels.csv`` in the shared layout; returns the csv."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    y = synthetic_labels(n, seed)
    lines = ["patient_id,left_file,right_file,has_both,age,sex," + ",".join(CLASS_CODES)
             + ",left_keywords,right_keywords"]
    for i in range(n):
        for eye in ("left", "right"):
            img = synthetic_fundus(y[i], size, seed * 1000 + i * 2 + (eye == "right"), eye)
            cv2.imwrite(str(out / "images" / f"{i}_{eye}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        lines.append(f"{i},images/{i}_left.jpg,images/{i}_right.jpg,1,60,Female," + ",".join(map(str, y[i]))
                     + ",synthetic,synthetic")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    return out / "labels.csv"
