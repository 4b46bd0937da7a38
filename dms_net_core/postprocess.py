"""From logits to a clinical decision: sigmoid, per-class thresholds, referable flag.

Shared by the node, the evaluator and the bag tools so that a "positive" means the same
thing everywhere. Thresholds come from the model bundle (tuned on validation data); the
ODIR official score itself always uses 0.5 (see `dms_net_core.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dms_net_core.classes import CLASS_CODES, NORMAL_INDEX


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32 out."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Decision:
    """One patient's thresholded result."""

    probabilities: np.ndarray  # [8] float32, CLASS_CODES order
    thresholds: np.ndarray  # [8] float32
    positive: np.ndarray  # [8] bool: probability strictly above its threshold
    referable: bool  # any disease class (not N) positive, or N itself negative

    @property
    def positive_codes(self) -> list[str]:
        return [c for c, p in zip(CLASS_CODES, self.positive) if p]


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> Decision:
    """Apply per-class thresholds (strictly greater, as the ODIR metric does).

    A patient is referable when any disease class is positive, or when the model is not
    confident the eyes are normal (N negative) even though no single disease passed its
    threshold: screening must not silently pass an abnormal-looking exam.
    """
    p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"{p.size} probabilities but {t.size} thresholds: the bundle's class list does not match the model")
    positive = p > t
    disease = np.delete(positive, NORMAL_INDEX)
    referable = bool(disease.any() or not positive[NORMAL_INDEX])
    return Decision(probabilities=p, thresholds=t, positive=positive, referable=referable)
