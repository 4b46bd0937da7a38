"""The coherence rule (issue 22, item 3): "Normal" is never positive together with a disease,
for a patient, for each eye, and in the decision-level score every tool reports."""

from __future__ import annotations

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.metrics import full_report, odir_decision_score, odir_official_score
from dms_net_core.postprocess import coherent_positive, decide

T = np.full(8, 0.5, np.float32)


def test_normal_is_cleared_when_a_disease_passes_its_threshold():
    d = decide(np.array([0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32), T)
    assert d.positive_codes == ["D"] and d.referable


def test_normal_stays_when_no_disease_passes():
    d = decide(np.array([0.8, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32), T)
    assert d.positive_codes == ["N"] and not d.referable
    nothing = decide(np.array([0.3] + [0.1] * 7, np.float32), T)  # not confidently normal: refer
    assert nothing.positive_codes == [] and nothing.referable


def test_rule_applies_row_wise_and_per_eye_with_per_class_thresholds():
    t = np.array([0.6, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9], np.float32)
    eyes = np.array([[0.7, 0.35, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],   # D passes its 0.3: N cleared
                     [0.7, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8],   # nothing passes: N stays
                     [0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.95]], np.float32)
    pos = coherent_positive(eyes, t)
    assert [[c for c, p in zip(CLASS_CODES, row) if p] for row in pos] == [["D"], ["N"], ["O"]]
    assert not (pos[:, 0] & pos[:, 1:].any(1)).any()


def test_decision_score_equals_the_official_score_on_plain_thresholding():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 8)) < 0.25).astype(np.uint8)
    probs = rng.random((60, 8)).astype(np.float32)
    assert odir_decision_score(labels, probs, probs > 0.5) == odir_official_score(labels, probs)
    report = full_report(labels, probs, np.full(8, 0.5))
    conflicts = int(((probs > 0.5)[:, 0] & (probs > 0.5)[:, 1:].any(1)).sum())
    assert conflicts > 0 and report["decisions"]["normal_with_disease_without_rule"] == conflicts
    assert report["decisions"]["at_thresholds_without_rule"] == odir_official_score(labels, probs)
    # the rule only turns N positives off: F1 changes, AUC does not
    assert report["decisions"]["at_thresholds"]["auc"] == report["official"]["auc"]
    assert report["decisions"]["at_thresholds"]["f1"] != report["official"]["f1"]
