"""One tiny exported bundle per test session, shared by the bundle/export/runtime/TensorRT tests.

Exporting costs a couple of seconds, so the bundle is built once and memoised here (a
session fixture imported into several test modules would otherwise run once per module).
Tests that mutate a bundle copy it first with `copy_bundle`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, normalize_batch, prepare_eye_uint8
from dms_net_core.model.config import DMSNetConfig
from test.odir_data import SUBSET_DIR, subset_two_eyed_pairs

#: the real ODIR-5K subset shipped with the tests (test/data/odir5k_subset)
DATA_DIR = SUBSET_DIR
#: two real patients with both eyes: the subset's first two (image file names)
REAL_PAIRS = subset_two_eyed_pairs(2)

_CACHE: dict[str, Path] = {}


def tiny_config() -> DMSNetConfig:
    return DMSNetConfig.tiny()


def model_factory():
    """The product's `build_model` (passed explicitly where a backend takes a factory)."""
    from dms_net_core.model import build_model

    return build_model


def build_tiny_model(seed: int = 0, **config_overrides: object):
    """DMS-Net in its tiny test configuration (``DMSNetConfig.tiny(**config_overrides)``), with
    deterministic random weights."""
    import torch

    torch.manual_seed(seed)
    return model_factory()(DMSNetConfig.tiny(**config_overrides)).eval()


def export_tiny_bundle(out_dir: Path, *, name: str = "tiny-test", head_scale: float = 1.0,
                       metrics: dict | None = None, **config_overrides: object) -> Path:
    """Export `build_tiny_model` (``DMSNetConfig.tiny(**config_overrides)``, seed 0) to ``out_dir``
    with thresholds spread over 0.3..0.65. ``head_scale`` multiplies the last Linear layer's
    weights so probabilities spread over (0, 1) (a random tiny head gives ~0.5 everywhere,
    which makes equality checks weak)."""
    import torch

    from dms_net_core.bundle_export import export_bundle

    model = build_tiny_model(**config_overrides)
    if head_scale != 1.0:
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            head.weight.mul_(head_scale)
    cfg = DMSNetConfig.tiny(**config_overrides)
    thresholds = np.linspace(0.3, 0.65, 8, dtype=np.float32)
    export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), out_dir, thresholds=thresholds,
                  metrics=metrics, name=name)
    return out_dir


def tiny_bundle_path(tmp_root: Path) -> Path:
    """Export (once per session) and return the path of a tiny bundle; treat it as read-only."""
    if "tiny" not in _CACHE:
        _CACHE["tiny"] = export_tiny_bundle(tmp_root / "tiny_bundle", metrics={"final": 0.5})
    return _CACHE["tiny"]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def real_prepared_pair_batch(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two real ODIR patients as the node hands them over: prepared uint8 [2,S,S,3] batches."""
    cfg = PreprocessConfig(image_size=image_size)
    lefts, rights = [], []
    for lf, rf in REAL_PAIRS:
        for name, acc in ((lf, lefts), (rf, rights)):
            path = DATA_DIR / "images" / name
            acc.append(prepare_eye_uint8(load_rgb(str(path)), cfg))
    return np.stack(lefts), np.stack(rights)


def real_pair_batch(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same two patients preprocessed with THE preprocessing, as float32 [2,3,S,S] batches."""
    cfg = PreprocessConfig(image_size=image_size)
    left, right = real_prepared_pair_batch(image_size)
    return normalize_batch(left, cfg), normalize_batch(right, cfg)
