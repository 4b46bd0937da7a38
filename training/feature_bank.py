"""A training feature bank: the frozen backbone prefix run ONCE over augmented views of every eye.

Why: with ``--frozen-stages K`` the stem and first K stages of the ImageNet backbone are a
fixed function, yet the image trainer recomputes them (and the augmentation in front of
them) at every step of every epoch, for every seed and fold. On the 2-core dev CPU that is
most of a step's forward work at the highest resolutions. The bank computes
``prefix(augment(eye))`` for ``views`` augmented views of each eye plus one plain view
(view 0: the eval transform, what validation and out-of-fold scoring read), stores them
fp16 in one ``numpy`` memmap on disk (bounded: ``(views + 1) x eyes x C x h x w x 2`` bytes,
printed before building), and the trainer (`training.bank_train`) then runs only the
trainable stages and the heads. One bank serves every seed and fold of a recipe: it depends
only on the ImageNet prefix weights, the preprocessing, the augmentation and its seed, all
recorded in ``meta.json`` and checked when a run opens it.

What changes against image training, stated in RESULTS: each epoch draws one of the
``views`` stored augmentations per eye instead of a fresh one (16 epochs over 8 views =
every view twice), and the augmented views' prefix is computed under bf16 autocast (the
plain view in fp32, as deployment computes it; in fp32 too on a CPU without native bf16,
`training.cpu_precision`, and ``meta.json`` records which). CutMix is not supported (the recipes that
use the bank have ``cutmix_prob: 0``).

Building resumes: views are written one at a time and ``meta.json`` lists the finished ones,
so an interrupted build continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dms_net_core.data.augment import AugmentConfig
from dms_net_core.data.eye_labels import eye_labels
from dms_net_core.data.odir import PatientRecord
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, prepare_eye_uint8
from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from training.cpu_precision import native_bf16
from training.gpu_augment import augment_eyes, eval_eyes

BANK_FORMAT_VERSION = 1
SIDES = ("left", "right")


@dataclass(frozen=True)
class BankSpec:
    """Everything the stored features depend on; two banks with equal specs are interchangeable."""

    backbone: str
    pretrained: str | None
    stage: int
    views: int
    seed: int
    preprocess: dict[str, Any]
    augment: dict[str, Any]
    prefix_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))


def prefix_fingerprint(model: torch.nn.Module, stage: int) -> str:
    """sha256 over the frozen prefix's weights and BatchNorm statistics (what the bank froze)."""
    from training.freeze import backbone_stages

    h = hashlib.sha256()
    for unit in backbone_stages(model.backbone)[: stage + 1]:
        for name, tensor in unit.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class FeatureBank:
    """An opened bank: ``features[view, eye]`` fp16 [C,h,w]; eyes are listed in ``eyes``."""

    path: Path
    spec: BankSpec
    features: np.ndarray  # memmap fp16 [views + 1, E, C, h, w]
    eyes: list[tuple[str, str]]  # (patient id, "left" | "right") per eye row
    eye_targets: np.ndarray  # uint8 [E, 8] keyword labels
    eye_known: np.ndarray  # bool [E]

    def eye_index(self) -> dict[tuple[str, str], int]:
        return {key: i for i, key in enumerate(self.eyes)}

    def rows(self, patient_ids: list[str]) -> np.ndarray:
        """int64 [N,2]: each patient's (left, right) eye row, -1 for an eye not photographed."""
        index = self.eye_index()
        out = np.array([[index.get((pid, side), -1) for side in SIDES] for pid in patient_ids], dtype=np.int64)
        unknown = [pid for pid, row in zip(patient_ids, out) if (row < 0).all()]
        if unknown:
            raise KeyError(f"{len(unknown)} patients are not in the feature bank {self.path} (e.g. {unknown[:3]}): "
                           "rebuild it from the same labels file (delete the folder)")
        return out


def bank_spec(model_cfg: DMSNetConfig, pre_cfg: PreprocessConfig, aug_cfg: AugmentConfig, *, stage: int,
              views: int, seed: int) -> tuple[BankSpec, torch.nn.Module]:
    """The spec a run with these settings needs, and the (pretrained) model it was derived from."""
    if model_cfg.architecture != "plain_binocular" or not model_cfg.backbone.startswith("efficientnet_lite"):
        raise ValueError(f"the feature bank supports plain_binocular EfficientNet-Lite models, not "
                         f"{model_cfg.architecture}/{model_cfg.backbone}: train from images (drop --feature-bank)")
    if not model_cfg.pretrained:
        raise ValueError("a feature bank freezes pretrained stages: set model pretrained=imagenet")
    if stage < 1:
        raise ValueError(f"--frozen-stages {stage}: a feature bank needs at least one frozen stage (e.g. 4)")
    if aug_cfg.cutmix_prob > 0:
        raise ValueError("the feature bank stores per-eye views, so CutMix cannot be applied: "
                         "set augment cutmix_prob=0")
    if views < 1:
        raise ValueError(f"--bank-views {views}: need at least 1 augmented view")
    model = build_model(model_cfg).eval()
    spec = BankSpec(backbone=model_cfg.backbone, pretrained=model_cfg.pretrained, stage=int(stage), views=int(views),
                    seed=int(seed), preprocess=pre_cfg.to_dict(),
                    augment=json.loads(json.dumps(asdict(aug_cfg), default=list)),
                    prefix_sha256=prefix_fingerprint(model, stage))
    return spec, model


def _eye_list(records: list[PatientRecord]) -> list[tuple[str, str, str, np.ndarray, bool]]:
    out = []
    for r in records:
        for side, path in (("left", r.left_path), ("right", r.right_path)):
            if path:
                target, known = eye_labels(r.keywords.get(side))
                out.append((r.patient_id, side, path, target, known))
    return out


def _feature_shape(model: torch.nn.Module, stage: int, image_size: int) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model.backbone.forward_prefix(torch.zeros(1, 3, image_size, image_size), stage).shape[1:])


def open_or_build_bank(path: str | Path, records: list[PatientRecord], model_cfg: DMSNetConfig,
                       pre_cfg: PreprocessConfig, aug_cfg: AugmentConfig, *, stage: int, views: int, seed: int,
                       batch_size: int = 64, workers: int | None = None, progress: bool = False) -> FeatureBank:
    """Open the bank at ``path`` if its spec and eyes match, finish it if interrupted, or build it."""
    path = Path(path)
    spec, model = bank_spec(model_cfg, pre_cfg, aug_cfg, stage=stage, views=views, seed=seed)
    eyes = _eye_list(records)
    keys = [[pid, side] for pid, side, *_ in eyes]
    meta_path = path / "meta.json"
    shape = (views + 1, len(eyes), *_feature_shape(model, stage, pre_cfg.image_size))
    done: list[int] = []
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") != spec.to_dict() or meta.get("eyes") != keys or meta.get("version") != BANK_FORMAT_VERSION:
            raise ValueError(f"the feature bank at {path} was built for other settings or patients: "
                             "delete the folder or pass another --feature-bank")
        done = list(meta.get("views_done", []))
    else:
        path.mkdir(parents=True, exist_ok=True)
    feats_path = path / "features.f16"
    if done and feats_path.is_file() and len(done) == views + 1:
        features = np.memmap(feats_path, dtype=np.float16, mode="r", shape=shape)
    else:
        features = _build(path, feats_path, shape, spec, keys, eyes, done, model, pre_cfg, aug_cfg,
                          batch_size=batch_size, workers=workers, progress=progress)
    return FeatureBank(path=path, spec=spec, features=features, eyes=[(p, s) for p, s in keys],
                       eye_targets=np.stack([e[3] for e in eyes]).astype(np.uint8),
                       eye_known=np.array([e[4] for e in eyes], dtype=bool))


def _write_meta(path: Path, spec: BankSpec, keys: list[list[str]], shape: tuple[int, ...], done: list[int]) -> None:
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps({"version": BANK_FORMAT_VERSION, "spec": spec.to_dict(), "shape": list(shape),
                               "views_done": sorted(done), "eyes": keys,
                               "augmented_views_compute": "bf16" if native_bf16() else "fp32"}) + "\n")
    os.replace(tmp, path / "meta.json")


def _build(path: Path, feats_path: Path, shape: tuple[int, ...], spec: BankSpec, keys: list[list[str]], eyes: list,
           done: list[int], model: torch.nn.Module, pre_cfg: PreprocessConfig, aug_cfg: AugmentConfig, *,
           batch_size: int, workers: int | None, progress: bool) -> np.ndarray:
    size_gb = np.prod(shape) * 2 / 1e9
    print(f"feature bank {path}: {shape[1]} eyes x {shape[0]} views of {tuple(shape[2:])} fp16 = {size_gb:.2f} GB "
          f"({len(done)} views already built)", flush=True)
    mode = "r+" if feats_path.is_file() and feats_path.stat().st_size == np.prod(shape) * 2 else "w+"
    if mode == "w+":
        done = []
    features = np.memmap(feats_path, dtype=np.float16, mode=mode, shape=shape)
    _write_meta(path, spec, keys, shape, done)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(lambda e: prepare_eye_uint8(load_rgb(e[2]), pre_cfg), eyes)))
    backbone = model.backbone.eval().to(memory_format=torch.channels_last)
    bf16 = native_bf16()
    for view in range(shape[0]):
        if view in done:
            continue
        gen = torch.Generator().manual_seed(spec.seed * 1000 + view)
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"bank view {view}", leave=False, dynamic_ncols=True)
        for s in starts:
            u8 = torch.from_numpy(images[s:s + batch_size])
            x = eval_eyes(u8, pre_cfg) if view == 0 else augment_eyes(u8, aug_cfg, pre_cfg, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            # the plain view in fp32 (deployment computes it so); augmented views under native bf16
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and view > 0):
                features[view, s:s + len(u8)] = (backbone.forward_prefix(x, spec.stage).float().numpy()
                                                 .astype(np.float16))
        features.flush()
        done.append(view)
        _write_meta(path, spec, keys, shape, done)
        print(f"feature bank view {view}/{shape[0] - 1} written", flush=True)
    del features
    return np.memmap(feats_path, dtype=np.float16, mode="r", shape=shape)
