"""Which class activation map an eye's overlay shows, and that map ready to draw.

A plain per-eye bundle gives each eye eight class activation maps (`dms_net_core.model.cam`);
a display shows one per eye. The rule, chosen so the overlay explains what the result says
about that eye:

- the eye's positive findings are the patient-level positive disease classes that
  `finding_eyes` attributes to it ("left"/"right"/"both", the message's ``positive_eyes``);
  "Normal" is not a finding;
- the overlay shows the finding with the highest probability *of that eye* (its per-eye
  head); with no finding on the eye, the eye's top class by its own probability.

The chosen map is min-max normalised to [0,1] (a constant map becomes all zeros): CAMs are
logit-valued and only their spatial pattern is meant to be seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dms_net_core.classes import NORMAL_INDEX
from dms_net_core.postprocess import Decision, finding_eyes


@dataclass(frozen=True)
class EvidenceMap:
    """One eye's visual evidence: the class it explains and its map in [0,1]."""

    class_index: int
    heatmap: np.ndarray  # [h,w] float32 in [0,1]
    #: True when ``class_index`` is a positive finding of this eye, False for the top-class fallback
    positive: bool


def normalised(cam: np.ndarray) -> np.ndarray:
    """Min-max scale a map to [0,1]; a constant (or non-finite-range) map gives zeros."""
    cam = np.asarray(cam, dtype=np.float32)
    low, high = float(np.min(cam)), float(np.max(cam))
    if not np.isfinite(high - low) or high - low <= 0.0:
        return np.zeros_like(cam)
    return (cam - low) / (high - low)


def eye_findings(decision: Decision, eye: str, left: np.ndarray, right: np.ndarray) -> list[int]:
    """Class indices of the positive disease findings `finding_eyes` puts on ``eye``."""
    positives = [int(i) for i in np.flatnonzero(decision.positive)]
    sides = finding_eyes(decision, left, right)
    return [i for i, side in zip(positives, sides) if i != NORMAL_INDEX and side in (eye, "both")]


def evidence_maps(cam_left: np.ndarray, cam_right: np.ndarray, left_probabilities: np.ndarray,
                  right_probabilities: np.ndarray, decision: Decision | None) -> tuple[EvidenceMap, EvidenceMap]:
    """Each eye's `EvidenceMap` from its maps [K,h,w] and probabilities [K] (module docstring);
    without a ``decision`` (no thresholds) both eyes show their top class."""
    out = []
    for eye, cams, probs in (("left", cam_left, left_probabilities), ("right", cam_right, right_probabilities)):
        probs = np.asarray(probs, dtype=np.float32).reshape(-1)
        findings = eye_findings(decision, eye, left_probabilities, right_probabilities) if decision is not None else []
        index = max(findings, key=lambda i: probs[i]) if findings else int(np.argmax(probs))
        out.append(EvidenceMap(class_index=int(index), heatmap=normalised(np.asarray(cams)[index]),
                               positive=bool(findings)))
    return out[0], out[1]
