"""The training checkpoint, defined once: written by the trainer, read and checked, turned back into a model.

``dms-net-train`` writes it (`make_checkpoint`); ``dms-net-export``, ``dms-net-eval`` and
``dms-net-ensemble`` read it (`load_checkpoint`) and rebuild the network from it
(`model_from_checkpoint`). Before this module the dict was a literal in the trainer, checked
in two places and rebuilt three ways (one of them non-strict), so a format change had to be
found everywhere.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True``
(never unpickle an untrusted file):

==============  ================================================================
``model``       the network's ``state_dict``
``model_config`` ``DMSNetConfig.to_dict()``: what `model_from_checkpoint` builds
``preprocess``  ``PreprocessConfig.to_dict()``: the input the weights were trained on
``thresholds``  one per class (`classes.CLASS_CODES` order); 0.5 each until tuned
``metrics``     validation (and held-out) reports
``data_summary`` what the run trained on
``epoch``, ``step``, ``args``  provenance (the trainer's arguments as plain values)
==============  ================================================================

The trainer's ``last.pt`` adds its resume state (`RESUME_KEYS`: optimizer, scheduler, scaler,
RNG, best score so far, schedule length, history, the weight average with ``--ema-decay``; its
``model`` is then the raw weights, while ``best.pt`` holds the average) to the same dict (`with_training_state`, read
back by `resume_state`); readers ignore keys they do not know. ``best.pt`` gets the tuned
thresholds, the final validation report and the history at the end of a run (`with_results`).

No other module spells a key of this dict: they call the functions below
(test_checkpoint.py greps the product code for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from dms_net_core.classes import NUM_CLASSES
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.errors import first_line, one_line
from dms_net_core.model.config import DMSNetConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Keys every checkpoint has; the rest have defaults (`checkpoint_preprocess`, `checkpoint_thresholds`).
REQUIRED_KEYS = ("model", "model_config")
#: What `make_checkpoint` writes: everything `dms-net-export` and `dms-net-ensemble` read (`slim_checkpoint`).
CHECKPOINT_KEYS = ("model", "model_config", "preprocess", "thresholds", "metrics", "data_summary", "epoch", "step",
                   "args")
#: What the trainer's ``last.pt`` adds to resume a run (`with_training_state`, `resume_state`).
RESUME_KEYS = ("optimizer", "lr_scheduler", "scaler", "rng", "best_final", "best_epoch", "epochs_total", "history",
               "ema")


def default_thresholds() -> list[float]:
    """0.5 for every class: the ODIR score's own cut, used until validation tunes them."""
    return [0.5] * NUM_CLASSES


def make_checkpoint(model_state: Mapping[str, Any], model_config: DMSNetConfig, preprocess: PreprocessConfig, *,
                    metrics: dict[str, Any], data_summary: dict[str, Any], epoch: int, step: int,
                    args: dict[str, Any], thresholds: list[float] | None = None) -> dict[str, Any]:
    """The dict ``dms-net-train`` saves as ``best.pt`` (see the module docstring)."""
    return {"model": model_state, "model_config": model_config.to_dict(), "preprocess": preprocess.to_dict(),
            "thresholds": list(thresholds) if thresholds is not None else default_thresholds(), "metrics": metrics,
            "data_summary": data_summary, "epoch": epoch, "step": step, "args": args}


def check_checkpoint(ckpt: Any, source: str | os.PathLike) -> dict[str, Any]:
    """``ckpt`` if it has the checkpoint's required entries; else a one-line ValueError naming ``source``."""
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED_KEYS):
        raise ValueError(f"checkpoint {source} has no 'model'/'model_config' entries: "
                         "pass a checkpoint written by dms-net-train")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint without unpickling arbitrary objects (``weights_only=True``).

    Raises FileNotFoundError (missing) or ValueError (corrupt, not a checkpoint), one line each."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found: pass the .pt file written by dms-net-train")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt/unsafe files
        raise ValueError(f"cannot load checkpoint {p} ({first_line(exc)}): "
                         "it is corrupt or not a dms-net-train checkpoint") from None
    return check_checkpoint(ckpt, p)


def checkpoint_model_config(ckpt: Mapping[str, Any]) -> DMSNetConfig:
    return DMSNetConfig.from_dict(ckpt["model_config"])


def checkpoint_preprocess(ckpt: Mapping[str, Any]) -> PreprocessConfig:
    """The preprocessing the weights were trained with (old checkpoints: the default at the model's size)."""
    return PreprocessConfig.from_dict(ckpt.get("preprocess")
                                      or {"image_size": checkpoint_model_config(ckpt).image_size})


def checkpoint_thresholds(ckpt: Mapping[str, Any]) -> np.ndarray:
    """[C] float32 per-class thresholds (0.5 each when the checkpoint has none)."""
    return np.asarray(ckpt.get("thresholds") or default_thresholds(), np.float32)


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> "torch.nn.Module":
    """The trained network: built from ``model_config`` (no ImageNet download: the weights come
    from the checkpoint) with every weight loaded, fp32, in eval mode.

    Weights that do not fit the config (missing, unexpected or mis-shaped) raise one ValueError
    naming a few of them: such a checkpoint comes from another code version."""
    from dms_net_core.model import build_model

    config = DMSNetConfig.from_dict({**dict(ckpt["model_config"]), "pretrained": None})
    model = build_model(config)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # mis-shaped tensors
        detail = one_line(exc, limit=300)
        raise ValueError(f"checkpoint weights do not fit model_config ({detail}): "
                         "use the code version that trained it") from None
    if missing or unexpected:
        raise ValueError(f"checkpoint weights do not fit model_config (missing {list(missing)[:3]}, "
                         f"unexpected {list(unexpected)[:3]}): use the code version that trained it")
    return model.float().eval()


def checkpoint_model_state(ckpt: Mapping[str, Any]) -> Mapping[str, Any]:
    """The network's ``state_dict`` as saved."""
    return ckpt["model"]


def checkpoint_metrics(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The validation (and held-out) reports; ``{}`` when the checkpoint has none."""
    return ckpt.get("metrics") or {}


def checkpoint_data_summary(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """What the run trained on (``dms-net-train``'s data summary); ``{}`` when absent."""
    return ckpt.get("data_summary") or {}


def checkpoint_split_file(ckpt: Mapping[str, Any]) -> str | None:
    """The split file the run trained with (its data summary's ``split_file``), or None."""
    return checkpoint_data_summary(ckpt).get("split_file")


def checkpoint_args(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's arguments as plain values (recipe merged in); ``{}`` when absent."""
    return dict(ckpt.get("args") or {})


def checkpoint_epoch(ckpt: Mapping[str, Any]) -> int | None:
    """The epoch the weights are from (None for a checkpoint that does not say)."""
    return ckpt.get("epoch")


def checkpoint_summary(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance of one checkpoint for a report or model.json: architecture, backbone, the
    trainer's recipe and seed, epoch, validation ODIR scores and split file (None where unknown)."""
    args = checkpoint_args(ckpt)
    cfg = ckpt["model_config"]
    return {"architecture": cfg.get("architecture"), "backbone": cfg.get("backbone"),
            "recipe": args.get("config"), "seed": args.get("seed"), "epoch": checkpoint_epoch(ckpt),
            "val_official": checkpoint_metrics(ckpt).get("official") or {}, "split_file": checkpoint_split_file(ckpt)}


def with_results(ckpt: Mapping[str, Any], *, thresholds: list[float], metrics: dict[str, Any],
                 history: list[dict[str, Any]]) -> dict[str, Any]:
    """``ckpt`` with the end of a run's results: tuned thresholds, final reports, per-epoch history."""
    return {**ckpt, "thresholds": [float(t) for t in thresholds], "metrics": metrics, "history": history}


def with_training_state(ckpt: Mapping[str, Any], *, optimizer: Mapping[str, Any], lr_scheduler: Mapping[str, Any],
                        scaler: Mapping[str, Any] | None, rng: Mapping[str, Any], best_final: float, best_epoch: int,
                        epochs_total: int, history: list[dict[str, Any]],
                        ema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``ckpt`` plus what resuming needs (`RESUME_KEYS`): the trainer's ``last.pt``; ``ema``:
    `training.ema.WeightEma.state_dict` when the run averages its weights."""
    return {**ckpt, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "scaler": scaler, "rng": rng,
            "best_final": best_final, "best_epoch": best_epoch, "epochs_total": epochs_total, "history": history,
            "ema": ema}


@dataclass
class ResumeState:
    """What `resume_state` reads back from a ``last.pt`` (`with_training_state`)."""

    model: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    lr_scheduler: Mapping[str, Any]
    scaler: Mapping[str, Any] | None
    rng: Mapping[str, Any]
    epoch: int
    step: int
    best_final: float
    best_epoch: int
    epochs_total: int
    history: list[dict[str, Any]] = field(default_factory=list)
    ema: Mapping[str, Any] | None = None


def resume_state(ckpt: Mapping[str, Any], epochs_total: int) -> ResumeState:
    """The resume state of a ``last.pt``; ``epochs_total``: the schedule length when it records none.

    A checkpoint without optimizer, scheduler or RNG state (a ``best.pt``) raises a one-line ValueError."""
    missing = [key for key in ("optimizer", "lr_scheduler", "rng", "epoch", "step") if key not in ckpt]
    if missing:
        raise ValueError(f"checkpoint has no {missing} entries: "
                         "resume from the last.pt dms-net-train writes, not best.pt")
    return ResumeState(model=ckpt["model"], optimizer=ckpt["optimizer"], lr_scheduler=ckpt["lr_scheduler"],
                       scaler=ckpt.get("scaler") or None, rng=ckpt["rng"], epoch=ckpt["epoch"], step=ckpt["step"],
                       best_final=ckpt.get("best_final", -1.0), best_epoch=ckpt.get("best_epoch", -1),
                       epochs_total=ckpt.get("epochs_total", epochs_total), history=list(ckpt.get("history", [])),
                       ema=ckpt.get("ema"))


def slim_checkpoint(ckpt: Mapping[str, Any], half: bool = True) -> dict[str, Any]:
    """``ckpt`` without the resume state (only `CHECKPOINT_KEYS`), floating weights in fp16 with
    ``half``: what `dms-net-export` and `dms-net-ensemble` need, a fraction of the size."""
    slim = {k: ckpt[k] for k in CHECKPOINT_KEYS if k in ckpt}
    if half:
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in slim["model"].items()}
    return slim
