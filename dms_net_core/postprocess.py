"""From logits to a clinical decision: sigmoid, per-class thresholds, referable flag.

Shared by the node, the evaluator and the bag tools so that a "positive" means the same
thing everywhere.

The coherence rule (`coherent_positive`): "Normal" is positive only when its probability
passes its threshold AND no disease class passes its own. A clinician cannot act on "Normal,
Diabetic retinopathy"; a disease finding outranks the normal score (screening refers), so N
is cleared, never the disease. The same rule applies to each eye's own findings. Thresholds
come from the model bundle (tuned on validation data); the ODIR official score itself always
uses 0.5 (see `dms_net_core.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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
    positive: np.ndarray  # [8] bool: probability strictly above its threshold (N: and no disease positive)
    referable: bool  # any disease class (not N) positive, or N itself negative

    @property
    def positive_codes(self) -> list[str]:
        return [c for c, p in zip(CLASS_CODES, self.positive) if p]


def coherent_positive(probabilities: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """bool [..., 8]: ``p > t`` per class (strict, as the ODIR metric), then N cleared on every
    row where a disease class is positive. Works on one patient, one eye or a [N, 8] batch."""
    p = np.asarray(probabilities, dtype=np.float32)
    positive = p > np.asarray(thresholds, dtype=np.float32)
    disease = np.delete(positive, NORMAL_INDEX, axis=-1).any(axis=-1)
    positive[..., NORMAL_INDEX] &= ~disease
    return positive


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> Decision:
    """Apply per-class thresholds (strictly greater, as the ODIR metric does) with the
    coherence rule (`coherent_positive`: N never positive together with a disease).

    A patient is referable when any disease class is positive, or when the model is not
    confident the eyes are normal (N negative) even though no single disease passed its
    threshold: screening must not silently pass an abnormal-looking exam.
    """
    p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"{p.size} probabilities but {t.size} thresholds: "
                         "the bundle's class list does not match the model")
    positive = coherent_positive(p, t)
    disease = np.delete(positive, NORMAL_INDEX)
    referable = bool(disease.any() or not positive[NORMAL_INDEX])
    return Decision(probabilities=p, thresholds=t, positive=positive, referable=referable)


def eye_probabilities(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """``left_probabilities``/``right_probabilities`` from a backend's named outputs (the
    sigmoid of ``left_logits``/``right_logits``), None for a model without per-eye heads."""
    if "left_logits" not in outputs or "right_logits" not in outputs:
        return {"left_probabilities": None, "right_probabilities": None}
    return {"left_probabilities": sigmoid(outputs["left_logits"]),
            "right_probabilities": sigmoid(outputs["right_logits"])}


def finding_eyes(decision: Decision, left: np.ndarray | None, right: np.ndarray | None) -> list[str]:
    """Which eye carries each positive finding, in `Decision.positive_codes` order.

    An eye carries a patient-level positive when its own probability (per-eye head) is above
    the class's threshold: "left", "right" or "both". When neither eye passes it on its own
    (the patient head combines both eyes), the eye with the higher probability is named, so
    every positive finding gets a side. Without per-eye outputs every entry is "" (unknown).
    N ("normal") concerns both eyes by definition."""
    codes = decision.positive_codes
    if left is None or right is None:
        return [""] * len(codes)
    left = np.asarray(left, dtype=np.float32).reshape(-1)
    right = np.asarray(right, dtype=np.float32).reshape(-1)
    out = []
    for i in np.flatnonzero(decision.positive):
        if i == NORMAL_INDEX:
            out.append("both")
            continue
        on_left, on_right = left[i] > decision.thresholds[i], right[i] > decision.thresholds[i]
        if on_left and on_right:
            out.append("both")
        elif on_left or on_right:
            out.append("left" if on_left else "right")
        else:
            out.append("left" if left[i] >= right[i] else "right")
    return out
