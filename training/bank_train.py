"""Train and predict from a feature bank (`training.feature_bank`): only the trainable stages run.

`dms_net_core.model.stage_split.FromStage` is the model with its backbone replaced by "the
backbone after stage K" (same parameter objects, nothing copied), so the model's own ``forward``
(heads, per-eye head, calibration) runs unchanged on banked features; the checkpoint is the full
model's state dict, exported and served exactly as an image-trained one.

Each training step takes ``batch_size`` two-eye patients (one random stored view per eye) for
the patient loss and the per-eye loss, plus a share of the one-eye patients (their one eye
trains the per-eye head only: the patient label of a patient with one photograph is not what
a two-eye model predicts, but the eye's own keyword label is).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dms_net_core.model.stage_split import FromStage
from training.eye_swap import swap_pair_rows
from training.feature_bank import FeatureBank


def gather(bank: FeatureBank, views: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """float32 channels-last [B,C,h,w] features of eye ``rows`` at ``views`` (fancy-indexed memmap)."""
    x = torch.from_numpy(np.ascontiguousarray(bank.features[views, rows])).float()
    return x.contiguous(memory_format=torch.channels_last)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
               pos_weight: torch.Tensor | None) -> torch.Tensor:
    """Weighted BCE averaged over the rows whose label is known (0 when none is)."""
    per_row = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none").mean(1)
    known = known.float()
    return (per_row * known).sum() / known.sum().clamp(min=1.0)


def _autocast(amp_dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_dtype == "bf16")


def train_one_epoch_bank(net: FromStage, criterion: nn.BCEWithLogitsLoss, optimizer: torch.optim.Optimizer, scheduler,
                         bank: FeatureBank, pair_rows: np.ndarray, labels: np.ndarray, single_rows: np.ndarray,
                         rng: np.random.Generator, *, batch_size: int, eye_loss_weight: float, amp_dtype: str,
                         frozen: list[nn.Module], progress: bool = False, desc: str = "train",
                         clip_grad_norm: float | None = None, ema: Any = None,
                         swap_eyes: float = 0.0) -> dict[str, float]:
    """One pass over the two-eye training patients (drop_last), one-eye patients spread over the steps;
    ``swap_eyes`` of the pairs are presented right-left (training/eye_swap.py)."""
    from training.freeze import keep_frozen_in_eval

    net.train()
    keep_frozen_in_eval(frozen)
    n = len(pair_rows)
    order = rng.permutation(n)
    steps = max(1, n // batch_size)
    singles = rng.permutation(single_rows) if eye_loss_weight > 0 else single_rows[:0]
    single_chunks = np.array_split(singles, steps)
    views_total = bank.features.shape[0]
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=desc, leave=False, dynamic_ncols=True)
    total, count = 0.0, 0
    pos_weight = criterion.pos_weight
    for k in it:
        idx = order[k * batch_size:(k + 1) * batch_size]
        rows = swap_pair_rows(pair_rows[idx], swap_eyes, rng)
        extra = single_chunks[k]
        eye_rows = np.concatenate([rows[:, 0], rows[:, 1], extra])
        views = rng.integers(1, views_total, size=len(eye_rows))
        x = gather(bank, views, eye_rows)
        b = len(idx)
        target = torch.from_numpy(labels[idx]).float()
        with _autocast(amp_dtype):
            outputs = net(x[:b], x[b:2 * b])
        loss = criterion(outputs[0].float(), target)
        if eye_loss_weight > 0 and len(outputs) == 5:
            eye_logits = [outputs[3].float(), outputs[4].float()]
            if len(extra):
                with _autocast(amp_dtype):
                    eye_logits.append(net.single_eye_logits(x[2 * b:]).float())
            loss = loss + eye_loss_weight * masked_bce(
                torch.cat(eye_logits), torch.from_numpy(bank.eye_targets[eye_rows]).float(),
                torch.from_numpy(bank.eye_known[eye_rows]), pos_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at this step: lower --lr or use --amp-dtype none")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm:
            nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(net.model)
        total += loss.item() * b
        count += b
        if progress:
            it.set_postfix(loss=f"{loss.item():.4f}")
    return {"loss": total / max(1, count), "lr": optimizer.param_groups[0]["lr"]}


@torch.no_grad()
def predict_bank(net: FromStage, bank: FeatureBank, pair_rows: np.ndarray, *, batch_size: int = 128,
                 amp_dtype: str = "none") -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Patient probabilities [N,8] and per-eye ``{"left","right"}`` [N,8] from the plain view 0."""
    net.eval()
    out, eyes = [], {"left": [], "right": []}
    for s in range(0, len(pair_rows), batch_size):
        rows = pair_rows[s:s + batch_size]
        b = len(rows)
        x = gather(bank, np.zeros(2 * b, np.int64), np.concatenate([rows[:, 0], rows[:, 1]]))
        with _autocast(amp_dtype):
            outputs = net(x[:b], x[b:])
        out.append(torch.sigmoid(outputs[0].float()))
        if len(outputs) == 5:
            eyes["left"].append(torch.sigmoid(outputs[3].float()))
            eyes["right"].append(torch.sigmoid(outputs[4].float()))
    probs = torch.cat(out).numpy()
    return probs, ({k: torch.cat(v).numpy() for k, v in eyes.items()} if eyes["left"] else None)
