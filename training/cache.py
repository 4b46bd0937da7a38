"""Decode + prepare every image ONCE into an in-memory uint8 tensor cache.

The GPU budget is minutes, so the trainer never decodes JPEGs in the loop: each eye is
read with `load_rgb` and prepared with `prepare_eye_uint8` (THE preprocessing, the same
function the node and the evaluator call) into ``[N, S, S, 3]`` uint8 arrays (2,479 pairs
at 256 px = 0.98 GB), decoded with a thread pool (OpenCV releases the GIL). Optionally
saved as ``.npy`` next to a small JSON key so a second process (or the suite) reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dms_net_core.data.eye_labels import eye_label_matrices
from dms_net_core.data.odir import PatientRecord, labels_matrix
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, prepare_eye_uint8


@dataclass
class PairCache:
    """Prepared uint8 images of both eyes, labels and ids in one order.

    ``eye_labels`` holds the per-eye keyword labels (`dms_net_core.data.eye_labels`):
    ``left``/``right`` uint8 [N,8], ``left_known``/``right_known`` bool [N]."""

    patient_ids: list[str]
    left: np.ndarray  # [N,S,S,3] uint8
    right: np.ndarray  # [N,S,S,3] uint8
    labels: np.ndarray  # [N,8] uint8
    eye_labels: dict[str, np.ndarray]

    def index(self, patient_ids: list[str]) -> np.ndarray:
        pos = {p: i for i, p in enumerate(self.patient_ids)}
        missing = [p for p in patient_ids if p not in pos]
        if missing:
            raise KeyError(f"{len(missing)} patients not in the image cache (e.g. {missing[:3]}): "
                           "delete the stale cache file")
        return np.array([pos[p] for p in patient_ids], dtype=np.int64)


def _cache_key(records: list[PatientRecord], cfg: PreprocessConfig) -> str:
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for r in records:
        h.update(f"{r.patient_id}|{r.left_path}|{r.right_path}|{r.label_key}\n".encode())
    return h.hexdigest()[:16]


def _prepare(path: str, cfg: PreprocessConfig) -> np.ndarray:
    return prepare_eye_uint8(load_rgb(path), cfg)


def build_pair_cache(
    records: list[PatientRecord],
    cfg: PreprocessConfig,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> PairCache:
    """Prepared images for ``records`` (both eyes required), from ``cache_dir`` when a
    cache with the same key (records + preprocessing) is there, else decoded and saved."""
    missing = [r.patient_id for r in records if not r.has_both]
    if missing:
        raise ValueError(f"{len(missing)} patients lack an eye (e.g. {missing[:3]}): "
                         "load them with skip_missing_eye=True")
    key = _cache_key(records, cfg)
    ids = [r.patient_id for r in records]
    labels = labels_matrix(records)
    eyes = eye_label_matrices((r.keywords.get("left"), r.keywords.get("right")) for r in records)
    if cache_dir is not None:
        base = Path(cache_dir) / f"pair_cache_{key}"
        if base.with_suffix(".left.npy").is_file() and base.with_suffix(".right.npy").is_file():
            left = np.load(base.with_suffix(".left.npy"), mmap_mode=None)
            right = np.load(base.with_suffix(".right.npy"), mmap_mode=None)
            if len(left) == len(ids):
                return PairCache(ids, left, right, labels, eyes)
    s = cfg.image_size
    left = np.empty((len(records), s, s, 3), np.uint8)
    right = np.empty((len(records), s, s, 3), np.uint8)
    paths = [r.left_path for r in records] + [r.right_path for r in records]
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(lambda p: _prepare(p, cfg), paths)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(paths), desc="decode", leave=False)
        for i, img in enumerate(it):
            (left if i < len(records) else right)[i % len(records)] = img
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.save(base.with_suffix(".left.npy"), left)
        np.save(base.with_suffix(".right.npy"), right)
    return PairCache(ids, left, right, labels, eyes)
