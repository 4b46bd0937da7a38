"""Left/right swap of training pairs (issue 22 item 4's eye-order lever).

Why: the official patient label is the OR of the two eyes' findings (N only when both are
normal), so it does not depend on which eye is called left; DMS-Net's heads and the control's
concatenation do depend on the order. Presenting a fraction of training pairs right-left, with
each eye keeping its own keyword labels, teaches the head that symmetry instead of leaving it
to 1,750 patients. Off by default (``--swap-eyes 0``) so every earlier recipe, and its random
stream, is unchanged: no random number is drawn when it is off.
"""

from __future__ import annotations

import numpy as np
import torch


def check_swap_probability(p: float) -> float:
    """``p`` if it is a probability, else a one-line error naming the flag."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"--swap-eyes {p}: give a probability in [0, 1] (0.5 presents half the pairs right-left)")
    return float(p)


def swap_pair_rows(rows: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Feature-bank pairs ``[B, 2]`` (left eye row, right eye row) with each pair's two rows
    exchanged with probability ``p``; the eyes' own labels follow their rows."""
    if p <= 0:
        return rows
    swap = rng.random(len(rows)) < p
    return np.where(swap[:, None], rows[:, ::-1], rows)


def swap_pair_tensors(batch: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """The image trainer's batch (``left``/``right`` images and, when present, ``eye_left``/
    ``eye_right`` labels and ``eye_known`` [B, 2]) with each pair's eyes exchanged with
    probability ``p`` (torch's global generator, which the trainer seeds)."""
    if p <= 0:
        return batch
    n = len(batch["left"])
    swap = torch.rand(n) < p
    out = dict(batch)
    for a, b in (("left", "right"), ("eye_left", "eye_right")):
        if a in batch:
            m = swap.to(batch[a].device).view(-1, *([1] * (batch[a].dim() - 1)))
            out[a], out[b] = torch.where(m, batch[b], batch[a]), torch.where(m, batch[a], batch[b])
    if "eye_known" in batch:
        out["eye_known"] = torch.where(swap.to(batch["eye_known"].device)[:, None], batch["eye_known"].flip(1),
                                       batch["eye_known"])
    return out
