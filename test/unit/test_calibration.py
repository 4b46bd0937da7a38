"""Per-class logit offsets (`dms_net_core.calibration`): they move a class's 0.5 cut where the
official score is better on the data they are fitted on, never reorder patients within a class,
and models carry them in their config without changing their weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dms_net_core.calibration import apply_logit_offsets, fit_logit_offsets, logit
from dms_net_core.metrics import odir_official_score, per_class_metrics
from dms_net_core.model import DMSNetConfig, build_model


def _under_called(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rare class whose positives score 0.2-0.45 (ranked right, cut wrong) beside well-cut classes."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 8)) < 0.15).astype(np.uint8)
    probs = np.where(labels == 1, rng.uniform(0.55, 0.95, labels.shape), rng.uniform(0.02, 0.45, labels.shape))
    rare = labels[:, 5] == 1
    probs[rare, 5] = rng.uniform(0.2, 0.45, rare.sum())
    probs[~rare, 5] = rng.uniform(0.0, 0.15, (~rare).sum())
    return labels, probs.astype(np.float32)


def test_offsets_fix_a_miscut_class_and_leave_good_ones_alone() -> None:
    labels, probs = _under_called()
    offsets, info = fit_logit_offsets(labels, probs)
    assert offsets[5] > 0.5 and np.all(np.abs(np.delete(offsets, 5)) <= 0.5)
    assert info["after"]["final"] > info["before"]["final"]
    calibrated = apply_logit_offsets(probs, offsets)
    assert odir_official_score(labels, calibrated)["kappa"] > odir_official_score(labels, probs)["kappa"]
    # monotone per class: per-class AUC is unchanged
    before, after = per_class_metrics(labels, probs), per_class_metrics(labels, calibrated)
    for c in before:
        assert after[c]["auc"] == pytest.approx(before[c]["auc"], abs=1e-9)


def test_apply_is_the_logit_shift_and_checks_its_length() -> None:
    p = np.array([[0.2, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]], np.float32)
    b = np.array([0.0, 1.0, -1.0, 0, 0, 0, 0, 0], np.float32)
    np.testing.assert_allclose(logit(apply_logit_offsets(p, b)), logit(p) + b, atol=1e-5)
    assert apply_logit_offsets(p, None) is not None
    with pytest.raises(ValueError, match="8 needed"):
        apply_logit_offsets(p, [0.0, 1.0])


@pytest.mark.parametrize("architecture", ["dms_net", "plain_binocular"])
def test_models_add_config_offsets_to_patient_logits_only(architecture: str) -> None:
    torch.manual_seed(0)
    plain = build_model(DMSNetConfig.tiny(architecture=architecture, per_eye_heads=True)).eval()
    offsets = [0.5, -1.0, 0.0, 2.0, 0.0, 0.0, -0.5, 0.25]
    shifted = build_model(DMSNetConfig.tiny(architecture=architecture, per_eye_heads=True,
                                            logit_offsets=offsets)).eval()
    shifted.load_state_dict(plain.state_dict())  # strict: the offsets are not a weight
    x = (torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        a, b = plain(*x), shifted(*x)
    torch.testing.assert_close(b[0], a[0] + torch.tensor(offsets))
    torch.testing.assert_close(b[3], a[3])  # per-eye logits untouched
    with pytest.raises(ValueError, match="one per class"):
        DMSNetConfig.tiny(logit_offsets=[0.0])
