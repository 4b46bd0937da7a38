"""DMS-Net training (``dms-net-train``), torchvision references/classification style.

    dms-net-train --config training/configs/dms_net_effnet_lite0.yaml --output-dir runs/dms_s0 --seed 0
    torchrun --nproc_per_node 2 -m training.train --config ... --output-dir ...   # DDP

A YAML recipe sets the defaults, CLI flags override them. Built for a GPU budget of
minutes: every image is decoded and prepared ONCE into a uint8 cache (`training.cache`)
that lives on the device, augmentation runs batched on the device
(`training.gpu_augment`), no DataLoader workers. Validation runs every epoch on the cached
val tensors with the eval transform (= `preprocess_eye`).

Loss: BCE-with-logits with ``pos_weight = clip((neg/pos) ** pos_weight_power, 1,
pos_weight_max)`` from TRAIN prevalence. Power 0 is plain BCE (the control recipe); the
DMS-Net recipes use 0.5: a full neg/pos weight (H: ~31x) makes the model over-predict rare
classes, which costs official F1 (= element accuracy), while plain BCE under-predicts
them at 0.5 (the issue's finding); the square root is the middle.

Per-eye supervision: a model built with ``per_eye_heads`` also outputs per-eye logits; they
are trained with the same weighted BCE on the per-eye keyword labels
(`dms_net_core.data.eye_labels`), times ``--eye-loss-weight``, masked for eyes whose keywords
name no class. Same-label CutMix then also requires equal per-eye labels, so a pasted box
never carries a finding into an eye labelled without it.

Checkpoints (format in the shared contract): ``last.pt`` after every epoch (for
``--resume``: model, optimizer, scheduler, scaler, epoch, step, RNG), ``best.pt`` for the
epoch with the best validation ODIR final score, finally rewritten with per-class
thresholds tuned on validation (max per-class F1) and the validation metrics.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dms_net_core.checkpoint import (
    checkpoint_model_state,
    load_checkpoint,
    make_checkpoint,
    resume_state,
    with_results,
    with_training_state,
)
from dms_net_core.classes import CLASS_CODES, NUM_CLASSES
from dms_net_core.data.augment import AugmentConfig
from dms_net_core.data.odir import load_odir, select_patients
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.data.splits import read_split, stratified_split
from dms_net_core.metrics import full_report, odir_official_score, per_eye_auc, tune_thresholds
from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from training.cache import PairCache, build_pair_cache
from training.ema import WeightEma
from training.epoch_snapshots import save_epoch_snapshot
from training.eye_swap import check_swap_probability, swap_pair_tensors
from training.freeze import freeze_backbone_stages, keep_frozen_in_eval
from training.gpu_augment import augment_batch, eval_batch
from training.paths import default_odir_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_SPLIT = Path(__file__).resolve().parent / "splits" / "odir5k_256_val15_seed0.json"
_NESTED = ("model", "preprocess", "augment")


# ----------------------------------------------------------------------------- arguments
def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DMS-Net training on ODIR-5K", add_help=add_help)
    p.add_argument("--config", default=None, help="YAML recipe (training/configs/*.yaml or a name from there)")
    p.add_argument("--labels", default=str(default_odir_dir() / "labels.csv"),
                   help="labels.csv or official ODIR-5K sheet (default: ../shared/data/odir5k_256 or $ODIR_256_DIR)")
    p.add_argument("--images-dir", default=None, help="images folder (official layout)")
    p.add_argument("--split-file", default=str(DEFAULT_SPLIT),
                   help="split JSON; '' = make one (--val-fraction, --split-seed)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="with --split-file '': also hold out this fraction as test")
    p.add_argument("--max-train-pairs", type=int, default=None, help="use only the first N train pairs (smoke tests)")
    p.add_argument("--max-val-pairs", type=int, default=None)
    p.add_argument("--model", default={}, type=_kv, action=_MergeDict,
                   help="DMSNetConfig override KEY=VALUE (repeatable)")
    p.add_argument("--preprocess", default={}, type=_kv, action=_MergeDict, help="PreprocessConfig override KEY=VALUE")
    p.add_argument("--augment", default={}, type=_kv, action=_MergeDict, help="AugmentConfig override KEY=VALUE")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (per process under DDP)")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine floor as a fraction of --lr")
    p.add_argument("--clip-grad-norm", type=float, default=None)
    p.add_argument("--amp-dtype", choices=("bf16", "fp16", "none"), default="bf16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    p.add_argument("--pos-weight-power", type=float, default=0.5, help="0 = plain BCE")
    p.add_argument("--pos-weight-max", type=float, default=10.0)
    p.add_argument("--eye-loss-weight", type=float, default=0.5,
                   help="weight of the per-eye keyword-label loss (models with per_eye_heads)")
    p.add_argument("--frozen-stages", type=int, default=0,
                   help="freeze the backbone's stem and first N stages (weights and BN stats); "
                        "~2x faster on a CPU at N=2")
    p.add_argument("--backbone-lr-mult", type=float, default=1.0,
                   help="backbone learning rate = --lr x this (the heads get --lr)")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="keep an exponential moving average of the weights (e.g. 0.99) and evaluate, keep and "
                        "export it (training/ema.py); default: off")
    p.add_argument("--swap-eyes", type=float, default=0.0,
                   help="present this fraction of training pairs right-left, each eye keeping its own labels "
                        "(training/eye_swap.py; the patient label does not depend on eye order); default: off")
    p.add_argument("--early-stop-patience", type=int, default=8, help="epochs without val final gain; 0 = off")
    p.add_argument("--time-budget-minutes", type=float, default=None, help="shrink the schedule / stop to fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--output-dir", default="runs/train")
    p.add_argument("--cache-dir", default=None, help="where the decoded image cache (.npy) is kept; default: none")
    p.add_argument("--feature-bank", default=None,
                   help="train from a feature bank in this folder (built there if missing; training.feature_bank): "
                        "the frozen prefix (--frozen-stages) runs once per stored view, epochs run only the rest")
    p.add_argument("--bank-stage", type=int, default=None,
                   help="the bank stores the output of the stem + this many stages (default: --frozen-stages; "
                        "a smaller one lets one bank serve runs with more frozen stages)")
    p.add_argument("--bank-views", type=int, default=8, help="augmented views per eye in a new feature bank")
    p.add_argument("--bank-seed", type=int, default=0, help="augmentation seed of a new feature bank")
    p.add_argument("--one-eye-patients", action=argparse.BooleanOptionalAction, default=True,
                   help="with --feature-bank: patients photographed on one side only (not in any split side) "
                        "train the per-eye head on their eye's keyword label")
    p.add_argument("--decode-workers", type=int, default=None)
    p.add_argument("--resume", default=None, help="last.pt to continue from (same step)")
    p.add_argument("--max-epochs-this-run", type=int, default=None,
                   help="stop after N epochs of this invocation (chunked/pre-emptible jobs; continue with --resume)")
    p.add_argument("--epoch-snapshots", action="store_true",
                   help="keep every epoch's validation probabilities and fp16 weights under epochs/ so that "
                        "cross-validation can choose one epoch count for all folds from the pooled out-of-fold "
                        "predictions (dms-net-oof) instead of each fold's own best epoch")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True)
    return p


def _kv(text: str) -> dict[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml

    k, v = text.split("=", 1)
    return {k.strip(): yaml.safe_load(v)}


class _MergeDict(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest) or {})
        merged.update(values)
        setattr(namespace, self.dest, merged)


def resolve_recipe(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        for cand in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"recipe {path} not found (also looked in {CONFIG_DIR}): "
                                "pass a YAML path or a recipe name")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Recipe YAML -> parser defaults -> CLI overrides (nested dicts merged key by key)."""
    import yaml

    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    recipe: dict[str, Any] = {}
    if pre.config:
        path = resolve_recipe(pre.config)
        recipe = yaml.safe_load(path.read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(k.replace("-", "_") for k in recipe if k.replace("-", "_") not in known)
        if unknown:
            raise ValueError(f"recipe {path}: unknown keys {unknown} - fix the spelling (see dms-net-train --help)")
        recipe = {k.replace("-", "_"): v for k, v in recipe.items()}
        parser.set_defaults(**{k: v for k, v in recipe.items() if k not in _NESTED})
    args = parser.parse_args(argv)
    for key in _NESTED:  # recipe dict, then CLI KEY=VALUE on top
        setattr(args, key, {**(recipe.get(key) or {}), **(getattr(args, key) or {})})
    check_swap_probability(args.swap_eyes)
    return args


def build_configs(args: argparse.Namespace) -> tuple[DMSNetConfig, PreprocessConfig, AugmentConfig]:
    model_cfg = DMSNetConfig.from_dict(dict(args.model))
    pre = dict(args.preprocess)
    pre.setdefault("image_size", model_cfg.image_size)
    pre_cfg = PreprocessConfig.from_dict(pre)
    if pre_cfg.image_size != model_cfg.image_size:
        raise ValueError(f"preprocess image_size {pre_cfg.image_size} != model image_size {model_cfg.image_size}: "
                         "set them equal")
    aug = dict(args.augment)
    for key in ("scale", "cutmix_area"):
        if key in aug:
            aug[key] = tuple(aug[key])
    unknown = sorted(set(aug) - set(AugmentConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown augment keys {unknown}: choose from {sorted(AugmentConfig.__dataclass_fields__)}")
    return model_cfg, pre_cfg, AugmentConfig(**aug)


# ----------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
    return rank, world, local


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- schedule / loss
class WarmupCosine:
    """LR factor per step: linear warm-up, then cosine to ``min_ratio`` at ``total_steps``.

    A class (not a lambda) so LambdaLR's state_dict stores ``total_steps`` and a resumed or
    time-budget-shortened schedule is restored exactly."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        self.warmup_steps, self.total_steps, self.min_ratio = int(warmup_steps), int(total_steps), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / max(1, self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def pos_weight_from_prevalence(labels: np.ndarray, power: float, max_weight: float) -> torch.Tensor:
    pos = labels.sum(0).astype(np.float64)
    neg = len(labels) - pos
    w = np.where(pos > 0, (neg / np.maximum(pos, 1)) ** power, 1.0)
    return torch.tensor(np.clip(w, 1.0, max_weight), dtype=torch.float32)


def _cpu_amp(requested: str) -> str:
    from training.cpu_precision import cpu_amp

    return cpu_amp(requested)


def _autocast(device: torch.device, amp_dtype: str):
    if amp_dtype == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ----------------------------------------------------------------------------- train / eval
def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler,
                    data: dict[str, torch.Tensor], order: torch.Tensor, *, batch_size: int, aug: AugmentConfig,
                    pre: PreprocessConfig, device: torch.device, amp_dtype: str, channels_last: bool,
                    clip_grad_norm: float | None = None, progress: bool = False, desc: str = "train",
                    eye_loss_weight: float = 0.0, frozen: list[nn.Module] | None = None,
                    ema: WeightEma | None = None, swap_eyes: float = 0.0) -> dict[str, float]:
    """One pass over ``order`` (indices into the cached train tensors); returns mean loss.
    ``ema``: updated after every optimiser step. ``swap_eyes``: the fraction of pairs presented
    right-left (training/eye_swap.py)."""
    model.train()
    keep_frozen_in_eval(frozen or [])
    total, count = 0.0, 0
    starts = range(0, len(order) - batch_size + 1, batch_size) if len(order) >= batch_size else [0]  # drop_last
    it = starts
    if progress:
        from tqdm import tqdm

        it = tqdm(starts, desc=desc, leave=False, dynamic_ncols=True)
    for s in it:
        idx = order[s:s + batch_size].to(data["left"].device)
        labels = data["labels"][idx]
        use_eyes = eye_loss_weight > 0 and "eye_left" in data
        batch = {"left": data["left"][idx], "right": data["right"][idx]}
        if use_eyes:
            batch |= {k: data[k][idx] for k in ("eye_left", "eye_right", "eye_known")}
        batch = swap_pair_tensors(batch, swap_eyes)
        # CutMix partners share the patient label set, and the per-eye labels when those are trained
        mix_key = torch.cat([labels, batch["eye_left"], batch["eye_right"]], dim=1) if use_eyes else labels
        left, right = augment_batch(batch["left"], batch["right"], mix_key, aug, pre)
        left, right = left.to(device, non_blocking=True), right.to(device, non_blocking=True)
        if channels_last:
            left, right = (left.contiguous(memory_format=torch.channels_last),
                           right.contiguous(memory_format=torch.channels_last))
        target = labels.to(device).float()
        with _autocast(device, amp_dtype):
            outputs = model(left, right)
        loss = criterion(outputs[0].float(), target)
        if use_eyes and len(outputs) == 5:
            loss = loss + eye_loss_weight * masked_eye_loss(
                criterion, outputs[3].float(), outputs[4].float(),
                {k: batch[k].to(device) for k in ("eye_left", "eye_right", "eye_known")})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at this step: lower --lr or use --amp-dtype bf16/none")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        total += loss.item() * len(idx)
        count += len(idx)
        if progress:
            it.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return {"loss": total / max(1, count), "lr": optimizer.param_groups[0]["lr"]}


def masked_eye_loss(criterion: nn.BCEWithLogitsLoss, logits_left: torch.Tensor, logits_right: torch.Tensor,
                    eyes: dict[str, torch.Tensor]) -> torch.Tensor:
    """The patient loss's weighted BCE on each eye's own keyword labels, averaged over the
    eyes whose keywords name a class (``eye_known``); 0 when no eye in the batch has one."""
    logits = torch.cat([logits_left, logits_right])
    target = torch.cat([eyes["eye_left"], eyes["eye_right"]]).float()
    known = torch.cat([eyes["eye_known"][:, 0], eyes["eye_known"][:, 1]]).float()
    per_eye = F.binary_cross_entropy_with_logits(logits, target, pos_weight=criterion.pos_weight,
                                                 reduction="none").mean(1)
    return (per_eye * known).sum() / known.sum().clamp(min=1.0)


@torch.no_grad()
def predict(model: nn.Module, data: dict[str, torch.Tensor], *, batch_size: int, pre: PreprocessConfig,
            device: torch.device, amp_dtype: str,
            channels_last: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Sigmoid probabilities [N,8] (float32, numpy) for all cached pairs, eval transform, and
    the per-eye probabilities ``{"left", "right"}`` [N,8] when the model has per-eye heads."""
    model.eval()
    out, eyes = [], {"left": [], "right": []}
    n = len(data["labels"])
    for s in range(0, n, batch_size):
        left, right = eval_batch(data["left"][s:s + batch_size], data["right"][s:s + batch_size], pre)
        left, right = left.to(device), right.to(device)
        if channels_last:
            left, right = (left.contiguous(memory_format=torch.channels_last),
                           right.contiguous(memory_format=torch.channels_last))
        with _autocast(device, amp_dtype):
            outputs = model(left, right)
        out.append(torch.sigmoid(outputs[0].float()).cpu())
        if len(outputs) == 5:
            eyes["left"].append(torch.sigmoid(outputs[3].float()).cpu())
            eyes["right"].append(torch.sigmoid(outputs[4].float()).cpu())
    probs = torch.cat(out).numpy() if out else np.zeros((0, NUM_CLASSES), np.float32)
    eye_probs = {k: torch.cat(v).numpy() for k, v in eyes.items()} if eyes["left"] else None
    return probs, eye_probs


def eye_label_arrays(data: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The cached per-eye labels in `dms_net_core.metrics.per_eye_auc`'s layout."""
    known = data["eye_known"].cpu().numpy()
    return {"left": data["eye_left"].cpu().numpy(), "right": data["eye_right"].cpu().numpy(),
            "left_known": known[:, 0], "right_known": known[:, 1]}


def evaluate(model: nn.Module, criterion: nn.Module, data: dict[str, torch.Tensor],
             **kw: Any) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray] | None]:
    """Validation: official ODIR score (+ loss, + per-eye AUC) and the probabilities."""
    probs, eye_probs = predict(model, data, **kw)
    return score_probs(data["labels"].cpu().numpy(), probs, eye_probs, eye_label_arrays(data)), probs, eye_probs


def score_probs(labels: np.ndarray, probs: np.ndarray, eye_probs: dict[str, np.ndarray] | None,
                eye_arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Official ODIR score at 0.5, the BCE loss and, with per-eye outputs, the per-eye AUC."""
    scores = odir_official_score(labels, probs)
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    scores["loss"] = float(F.binary_cross_entropy(p, torch.from_numpy(labels).float(), weight=None).item())
    if eye_probs is not None:
        scores["eye_auc"] = per_eye_auc(eye_arrays, eye_probs)["auc"]
    return scores


# ----------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, pre_cfg: PreprocessConfig, *, cache_pool: dict | None = None,
              progress: bool = False) -> tuple[PairCache, dict[str, np.ndarray], dict[str, Any]]:
    """Records -> split -> one prepared uint8 cache; returns cache, index arrays, summary.

    ``cache_pool`` (run_suite) maps (labels, preprocess) to an already built cache."""
    loaded = load_odir(args.labels, args.images_dir)
    if args.split_file:
        split = read_split(args.split_file)
    else:
        split = stratified_split(loaded.records, args.val_fraction, args.split_seed, test_fraction=args.test_fraction)
    source = str(args.split_file or "split")
    sides = {name: select_patients(loaded.records, ids, source=source) for name, ids in split.items()}
    if args.max_train_pairs:
        sides["train"] = sides["train"][: args.max_train_pairs]
    if args.max_val_pairs:  # also caps the held-out test side: smoke runs only
        for name in ("val", "test"):
            if name in sides:
                sides[name] = sides[name][: args.max_val_pairs]
    everyone = [r for recs in sides.values() for r in recs]
    key = (str(Path(args.labels).resolve()), json.dumps(pre_cfg.to_dict(), sort_keys=True))
    cache = (cache_pool or {}).get(key)
    if cache is None or not {r.patient_id for r in everyone} <= set(cache.patient_ids):
        cache = build_pair_cache(everyone, pre_cfg, workers=args.decode_workers,
                                 cache_dir=args.cache_dir, progress=progress)
        if cache_pool is not None:
            cache_pool[key] = cache
    idx = {name: cache.index([r.patient_id for r in recs]) for name, recs in sides.items()}
    summary = loaded.summary() | {
        "split_file": str(args.split_file) if args.split_file else None,
        "split_seed": args.split_seed if not args.split_file else None,
    }
    for name, recs in sides.items():
        summary[name] = {"num_patients": len(recs),
                         "class_counts": {c: int(v)
                                          for c, v in zip(CLASS_CODES, np.stack([r.labels for r in recs]).sum(0))}}
    return cache, idx, summary


def load_bank_data(
    args: argparse.Namespace, model_cfg: DMSNetConfig, pre_cfg: PreprocessConfig, aug_cfg: AugmentConfig,
    *, progress: bool = False
) -> tuple[Any, dict[str, dict[str, np.ndarray]], np.ndarray, dict[str, Any]]:
    """The feature bank of every labelled eye (one bank serves all splits, seeds and folds), the
    split sides as bank rows + labels, and the one-eye patients' eye rows (training only)."""
    from training.feature_bank import open_or_build_bank

    loaded = load_odir(args.labels, args.images_dir, skip_missing_eye=False)
    split = read_split(args.split_file) if args.split_file else stratified_split(
        [r for r in loaded.records if r.has_both], args.val_fraction, args.split_seed, test_fraction=args.test_fraction)
    source = str(args.split_file or "split")
    sides = {name: select_patients(loaded.records, ids, source=source) for name, ids in split.items()}
    if args.max_train_pairs:
        sides["train"] = sides["train"][: args.max_train_pairs]
    if args.max_val_pairs:
        for name in ("val", "test"):
            if name in sides:
                sides[name] = sides[name][: args.max_val_pairs]
    one_eye_sided = [r.patient_id for recs in sides.values() for r in recs if not r.has_both]
    if one_eye_sided:
        raise ValueError(f"{len(one_eye_sided)} split patients have one eye (e.g. {one_eye_sided[:3]}): "
                         "splits list two-eye patients; one-eye patients join training by --one-eye-patients")
    placed = {r.patient_id for recs in sides.values() for r in recs}
    singles = ([r for r in loaded.records if not r.has_both and r.patient_id not in placed]
               if args.one_eye_patients else [])
    bank = open_or_build_bank(args.feature_bank, loaded.records, model_cfg, pre_cfg, aug_cfg, stage=bank_stage(args),
                              views=args.bank_views, seed=args.bank_seed, workers=args.decode_workers,
                              progress=progress)
    data = {name: {"rows": bank.rows([r.patient_id for r in recs]), "labels": np.stack([r.labels for r in recs])}
            for name, recs in sides.items()}
    single_rows = bank.rows([r.patient_id for r in singles]).max(axis=1) if singles else np.zeros(0, np.int64)
    summary = {"source": loaded.source, "num_patients": len(loaded.records),
               "split_file": str(args.split_file) if args.split_file else None,
               "feature_bank": {"path": str(bank.path),
                                **{k: v for k, v in bank.spec.to_dict().items() if k != "augment"}},
               "one_eye_patients_trained": len(singles)}
    for name, recs in sides.items():
        summary[name] = {"num_patients": len(recs),
                         "class_counts": {c: int(v) for c, v in zip(CLASS_CODES, data[name]["labels"].sum(0))}}
    return bank, data, single_rows, summary


def open_bank_run(
    checkpoint: str | Path,
) -> tuple[argparse.Namespace, nn.Module, Any, dict[str, dict[str, np.ndarray]]]:
    """A finished feature-bank run's training arguments, trained model (fp32, eval), bank and
    split sides (two-eye patients only): what the tools that re-score or re-use such a run start from."""
    from dms_net_core.checkpoint import checkpoint_args, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    args = argparse.Namespace(**checkpoint_args(ckpt))
    if not getattr(args, "feature_bank", None):
        raise ValueError(f"{checkpoint} was not trained from a feature bank: pass the best.pt of a "
                         "dms-net-train --feature-bank run (its bank holds the stored views)")
    args.one_eye_patients = False
    model_cfg, pre_cfg, aug_cfg = build_configs(args)
    bank, data, _, _ = load_bank_data(args, model_cfg, pre_cfg, aug_cfg)
    return args, model_from_checkpoint(ckpt).eval(), bank, data


def bank_stage(args: argparse.Namespace) -> int:
    stage = args.frozen_stages if args.bank_stage is None else args.bank_stage
    if stage > args.frozen_stages:
        raise ValueError(f"--bank-stage {stage} > --frozen-stages {args.frozen_stages}: "
                         "the banked stages must be frozen")
    return stage


def bank_eye_arrays(bank: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per-eye labels of bank rows in `dms_net_core.metrics.per_eye_auc`'s layout."""
    return {"left": bank.eye_targets[rows[:, 0]], "right": bank.eye_targets[rows[:, 1]],
            "left_known": bank.eye_known[rows[:, 0]], "right_known": bank.eye_known[rows[:, 1]]}


def to_device_tensors(cache: PairCache, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images + labels of one subset, on ``device`` (a GPU holds all of ODIR-5K at 256 px)."""
    i = torch.from_numpy(index)
    eyes = cache.eye_labels
    return {
        "left": torch.from_numpy(cache.left)[i].to(device),
        "right": torch.from_numpy(cache.right)[i].to(device),
        "labels": torch.from_numpy(cache.labels)[i].to(device),
        "eye_left": torch.from_numpy(eyes["left"])[i].to(device),
        "eye_right": torch.from_numpy(eyes["right"])[i].to(device),
        "eye_known": torch.from_numpy(np.stack([eyes["left_known"], eyes["right_known"]], axis=1))[i].to(device),
    }


# ----------------------------------------------------------------------------- main
def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(json.dumps(vars(args), default=str))


def save_eye_arrays(out_dir: Path, side: str, eye_probs: dict[str, np.ndarray],
                    eye_labels: dict[str, np.ndarray]) -> None:
    """Per-eye probabilities and labels beside ``<side>_probs.npy`` (ensembles are scored from files)."""
    np.savez(out_dir / f"{side}_eye.npz", **{f"probs_{k}": v for k, v in eye_probs.items()},
             **{f"labels_{k}": v for k, v in eye_labels.items()})


def epochs_that_fit(epoch_times: list[float], elapsed_s: float, budget_s: float, epochs_total: int) -> int:
    """How many more epochs the time budget holds, judged on steady epochs only.

    The first epoch of an invocation pays cuDNN autotuning and lazy CUDA init (72-130 s
    against 10 s for later ones with six jobs sharing an H200). Judging the schedule on it
    cut every 30-epoch cosine to 5 epochs that would all have fit, so until a steady epoch
    is timed only a spent budget stops a run (0), else the schedule is left alone."""
    steady = epoch_times[1:]
    if not steady:
        return epochs_total if elapsed_s < budget_s else 0
    return int((budget_s - elapsed_s) // float(np.median(steady[-3:])))


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms; the backbone at ``lr * backbone_lr_mult``."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.startswith("backbone."), p.ndim <= 1 or name.endswith(".bias"))
            groups.setdefault(key, []).append(p)
    return [{"params": params, "lr": lr * (backbone_lr_mult if is_backbone else 1.0),
             "weight_decay": 0.0 if no_decay else weight_decay}
            for (is_backbone, no_decay), params in sorted(groups.items())]


def train_run(args: argparse.Namespace, *, cache_pool: dict | None = None) -> dict[str, Any]:
    """One training run (also called by `training.run_suite`); returns a result summary."""
    t_start = time.time()
    rank, world, local_rank = init_distributed()
    is_main = rank == 0
    device = pick_device(args.device, local_rank)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # CPU: bf16 autocast only when asked for (--amp-dtype bf16) and the CPU has native bf16
    # (AVX512-BF16/AMX: 2x faster steps on the dev CPU); fp16 autocast only on CUDA.
    amp_dtype = args.amp_dtype if device.type == "cuda" else _cpu_amp(args.amp_dtype)
    model_cfg, pre_cfg, aug_cfg = build_configs(args)
    out_dir = Path(args.output_dir)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    progress = bool(args.progress and is_main)

    t0 = time.time()
    bank = None
    if args.feature_bank:
        if world > 1 or device.type != "cpu":
            raise ValueError("--feature-bank is the CPU trainer (one process): drop torchrun / use --device cpu")
        bank, bank_data, single_rows, data_summary = load_bank_data(args, model_cfg, pre_cfg, aug_cfg,
                                                                    progress=progress)
        side_sizes = {name: len(d["rows"]) for name, d in bank_data.items()}
        train_labels = bank_data["train"]["labels"]
    else:
        cache, idx, data_summary = load_data(args, pre_cfg, cache_pool=cache_pool, progress=progress)
        data_device = device if device.type == "cuda" else torch.device("cpu")
        side_data = {name: to_device_tensors(cache, index, data_device) for name, index in idx.items()}
        train_data = side_data["train"]
        side_sizes = {name: len(index) for name, index in idx.items()}
        train_labels = train_data["labels"].cpu().numpy()
    # Held-out patients ("test" side): scored once, with the best epoch and the validation thresholds.
    cache_s = time.time() - t0
    n_train = side_sizes["train"]
    if n_train < args.batch_size * world:
        raise ValueError(f"{n_train} training pairs < one batch of {args.batch_size} x {world} processes: "
                         "lower --batch-size")

    model = build_model(model_cfg).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = freeze_backbone_stages(model, args.frozen_stages)
    eye_loss_weight = args.eye_loss_weight if model_cfg.per_eye_heads else 0.0
    optimizer = torch.optim.AdamW(param_groups(model, args.lr, args.weight_decay, args.backbone_lr_mult), lr=args.lr)
    steps_per_epoch = n_train // (args.batch_size * world)
    schedule = WarmupCosine(round(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch,
                            args.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == "fp16" else None
    criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight_from_prevalence(
        train_labels, args.pos_weight_power, args.pos_weight_max).to(device))

    start_epoch, step, best_final, best_epoch, epochs_total = 0, 0, -1.0, -1, args.epochs
    history: list[dict[str, Any]] = []
    if args.resume:
        resumed = resume_state(load_checkpoint(args.resume), args.epochs)
        model.load_state_dict(resumed.model)
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.lr_scheduler)
        if scaler is not None and resumed.scaler:
            scaler.load_state_dict(resumed.scaler)
        start_epoch, step = resumed.epoch + 1, resumed.step
        best_final, best_epoch = resumed.best_final, resumed.best_epoch
        epochs_total = resumed.epochs_total
        history = resumed.history
        _set_rng_state(resumed.rng, device)
        if is_main:
            print(f"resumed from {args.resume}: epoch {start_epoch}, step {step}")
    # with EMA the averaged weights are evaluated, kept as best.pt and exported; the raw ones train
    ema = WeightEma(model, args.ema_decay) if args.ema_decay else None
    if ema is not None and args.resume:
        if resumed.ema is None:
            raise ValueError(f"{args.resume} was written without --ema-decay: resume it without that flag, "
                             "or start a new run")
        ema.load_state_dict(resumed.ema)
    eval_model = ema.module if ema is not None else model
    bank_net = eval_bank_net = None
    if bank is not None:
        from dms_net_core.model.stage_split import FromStage

        bank_net = FromStage(model, bank.spec.stage)
        eval_bank_net = FromStage(eval_model, bank.spec.stage)

    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True)
    if args.compile:
        train_model = torch.compile(train_model)

    writer = None
    if is_main and args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional at run time
            writer = None
    log_path = out_dir / "log.csv"
    eval_kw = dict(batch_size=args.eval_batch_size, pre=pre_cfg, device=device, amp_dtype=amp_dtype,
                   channels_last=args.channels_last)

    def side_labels(name: str) -> np.ndarray:
        return bank_data[name]["labels"] if bank is not None else side_data[name]["labels"].cpu().numpy()

    def side_eye_arrays(name: str) -> dict[str, np.ndarray]:
        return bank_eye_arrays(bank, bank_data[name]["rows"]) if bank is not None else eye_label_arrays(side_data[name])

    def side_predict(name: str, final: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """A side's probabilities; ``final`` (the scores reported and saved): fp32 on a CPU bank."""
        if bank is not None:
            from training.bank_train import predict_bank

            return predict_bank(eval_bank_net, bank, bank_data[name]["rows"], batch_size=args.eval_batch_size,
                                amp_dtype="none" if final else amp_dtype)
        return predict(eval_model, side_data[name], **eval_kw)

    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    budget_s = args.time_budget_minutes * 60 if args.time_budget_minutes else None
    stop_reason = "epochs"
    epoch_times: list[float] = []
    for epoch in range(start_epoch, epochs_total):
        if epoch >= epochs_total:
            break
        te = time.time()
        sampler.set_epoch(epoch)
        if bank is not None:
            from training.bank_train import train_one_epoch_bank

            train_stats = train_one_epoch_bank(
                bank_net, criterion, optimizer, scheduler, bank, bank_data["train"]["rows"], train_labels, single_rows,
                np.random.default_rng([args.seed, epoch]), batch_size=args.batch_size, eye_loss_weight=eye_loss_weight,
                amp_dtype=amp_dtype, frozen=frozen, progress=progress, desc=f"epoch {epoch}",
                clip_grad_norm=args.clip_grad_norm, ema=ema, swap_eyes=args.swap_eyes)
            step += steps_per_epoch
        else:
            order = torch.tensor(list(iter(sampler)), dtype=torch.long)
            train_stats = train_one_epoch(train_model, criterion, optimizer, scheduler, scaler, train_data, order,
                                          batch_size=args.batch_size, aug=aug_cfg, pre=pre_cfg, device=device,
                                          amp_dtype=amp_dtype, channels_last=args.channels_last,
                                          clip_grad_norm=args.clip_grad_norm, progress=progress, desc=f"epoch {epoch}",
                                          eye_loss_weight=eye_loss_weight, frozen=frozen, ema=ema,
                                          swap_eyes=args.swap_eyes)
            step += len(order) // args.batch_size
        val_probs_epoch, val_eye_epoch = side_predict("val")
        val_scores = score_probs(side_labels("val"), val_probs_epoch, val_eye_epoch, side_eye_arrays("val"))
        epoch_s = time.time() - te
        epoch_times.append(epoch_s)
        row = {"epoch": epoch, "step": step, "train_loss": train_stats["loss"], "lr": train_stats["lr"],
               **{f"val_{k}": v for k, v in val_scores.items()}, "epoch_s": epoch_s}
        history.append(row)
        improved = val_scores["final"] > best_final
        if improved:
            best_final, best_epoch = val_scores["final"], epoch
        if is_main:
            eye_text = f" eye-auc {val_scores['eye_auc']:.4f}" if "eye_auc" in val_scores else ""
            print(f"epoch {epoch}/{epochs_total - 1} step {step} loss {train_stats['loss']:.4f} "
                  f"val final {val_scores['final']:.4f} kappa {val_scores['kappa']:.4f} f1 {val_scores['f1']:.4f} "
                  f"auc {val_scores['auc']:.4f}{eye_text} ({epoch_s:.1f}s)",
                  flush=True)
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            if writer is not None:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        writer.add_scalar(k, v, step)
            checkpoint_kw = dict(metrics={"official": {k: val_scores[k] for k in ("kappa", "f1", "auc", "final")}},
                                 data_summary=data_summary, epoch=epoch, step=step, args=_plain_args(args))
            base = make_checkpoint(eval_model.state_dict(), model_cfg, pre_cfg, **checkpoint_kw)  # what was evaluated
            if improved:
                torch.save(base, out_dir / "best.pt")
            if args.epoch_snapshots:
                save_epoch_snapshot(out_dir, epoch, base, val_probs_epoch)
            live = base if ema is None else make_checkpoint(model.state_dict(), model_cfg, pre_cfg, **checkpoint_kw)
            torch.save(with_training_state(live, optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                                           scaler=scaler.state_dict() if scaler is not None else None,
                                           rng=_rng_state(device), best_final=best_final, best_epoch=best_epoch,
                                           epochs_total=epochs_total, history=history,
                                           ema=ema.state_dict() if ema is not None else None), out_dir / "last.pt")
        if (args.max_epochs_this_run and epoch + 1 - start_epoch >= args.max_epochs_this_run
                and epoch + 1 < epochs_total):
            stop_reason = (f"paused after {args.max_epochs_this_run} epochs (--max-epochs-this-run); "
                           "continue with --resume")
            break
        if args.early_stop_patience and epoch - best_epoch >= args.early_stop_patience:
            stop_reason = f"early stop: no val final gain for {args.early_stop_patience} epochs"
            break
        if budget_s is not None:
            elapsed = time.time() - t_start
            fit = epochs_that_fit(epoch_times, elapsed, budget_s, epochs_total)
            if fit <= 0:
                stop_reason = "time budget"
                break
            if epoch + 1 + fit < epochs_total:
                # shrink the cosine so it still ends at its floor instead of being cut mid-way
                epochs_total = epoch + 1 + fit
                # scheduler.lr_lambdas[0] is schedule
                schedule.total_steps = max(step + 1, epochs_total * steps_per_epoch)
                if is_main:
                    print(f"time budget: schedule shortened to {epochs_total} epochs", flush=True)
    if writer is not None:
        writer.close()

    result: dict[str, Any] = {"output_dir": str(out_dir), "best_epoch": best_epoch, "stop_reason": stop_reason,
                              "epochs_run": len(history), "cache_s": cache_s, "train_s": time.time() - t_start}
    if is_main:
        best = load_checkpoint(out_dir / "best.pt")
        eval_model.load_state_dict(checkpoint_model_state(best))
        probs, eye_probs = side_predict("val", final=True)
        labels = side_labels("val")
        thresholds = tune_thresholds(labels, probs)
        report = full_report(labels, probs, thresholds)
        if eye_probs is not None:
            report["per_eye"] = per_eye_auc(side_eye_arrays("val"), eye_probs)
            save_eye_arrays(out_dir, "val", eye_probs, side_eye_arrays("val"))
        threshold_list = [float(t) for t in thresholds]
        best_metrics = json.loads(json.dumps(report, default=float))
        if "test" in side_sizes:
            test_probs, test_eye_probs = side_predict("test", final=True)
            test_report = full_report(side_labels("test"), test_probs, thresholds)
            if test_eye_probs is not None:
                test_report["per_eye"] = per_eye_auc(side_eye_arrays("test"), test_eye_probs)
                save_eye_arrays(out_dir, "test", test_eye_probs, side_eye_arrays("test"))
            best_metrics["held_out_test"] = json.loads(json.dumps(test_report, default=float))
            np.save(out_dir / "test_probs.npy", test_probs)
            np.save(out_dir / "test_labels.npy", side_labels("test"))
            (out_dir / "test_metrics.json").write_text(json.dumps(test_report, indent=1, default=float) + "\n")
            result["test"] = test_report["official"]
        torch.save(with_results(best, thresholds=threshold_list, metrics=best_metrics, history=history),
                   out_dir / "best.pt")
        np.save(out_dir / "val_probs.npy", probs)
        np.save(out_dir / "val_labels.npy", labels)  # with the probs: seed ensembles are scored from files
        (out_dir / "val_metrics.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        result |= {"val": report["official"], "thresholds": threshold_list, "train_s": time.time() - t_start}
        (out_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"best epoch {best_epoch}: val ODIR final {report['official']['final']:.4f} "
              f"(kappa {report['official']['kappa']:.4f}, F1 {report['official']['f1']:.4f}, "
              f"AUC {report['official']['auc']:.4f}); "
              f"{stop_reason}; {result['train_s']:.0f}s total", flush=True)
        if "test" in result:
            t = result["test"]
            print(f"held-out test ({side_sizes['test']} patients, never used for selection): "
                  f"ODIR final {t['final']:.4f} "
                  f"(kappa {t['kappa']:.4f}, F1 {t['f1']:.4f}, AUC {t['auc']:.4f})", flush=True)
    if world > 1:
        dist.barrier()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    try:
        args = parse_args(argv)
        return train_run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
