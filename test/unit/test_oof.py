"""Out-of-fold scoring (`training.oof`): the epoch is chosen on pooled predictions, no fold's
own labels ever fit its calibration or thresholds, and the ensemble refuses a record that
describes other members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.metrics import odir_official_score
from training.epoch_snapshots import epoch_val_probs, snapshot_paths
from training.oof import cross_fit, epoch_table, oof_summary


def _fold_data(rng: np.random.Generator, folds: int = 3, n: int = 60, signal: float = 1.0) -> tuple[list, list]:
    labels, probs = [], []
    for _ in range(folds):
        y = (rng.random((n, 8)) < 0.3).astype(np.uint8)
        y[:, 0] = (y[:, 1:].sum(1) == 0)
        logits = signal * (2 * y - 1) + rng.normal(0, 1, y.shape)
        labels.append(y)
        probs.append((1 / (1 + np.exp(-logits))).astype(np.float32))
    return labels, probs


def test_cross_fit_never_sees_the_fold_it_applies_to():
    labels = [np.full((4, 8), k, np.uint8) for k in range(3)]
    probs = [np.full((4, 8), 0.1 * k, np.float32) for k in range(3)]
    seen = []
    out = cross_fit(labels, probs, lambda y, p: sorted(set(y.ravel().tolist())),
                    lambda p, fitted: seen.append(fitted) or p)
    assert seen == [[1, 2], [0, 2], [0, 1]] and len(out) == 3


def test_epoch_table_picks_the_epoch_whose_pooled_predictions_score_best(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels, _ = _fold_data(rng)
    dirs = []
    for k, y in enumerate(labels):
        d = tmp_path / f"fold{k}"
        for epoch, signal in enumerate((0.2, 0.4, 3.0, 0.6)):  # epoch 2 separates the classes best
            path = snapshot_paths(d, epoch)[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, (1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, y.shape))))).astype(np.float32))
        dirs.append(d)
    assert sorted(epoch_val_probs(dirs[0])) == [0, 1, 2, 3]
    rows, best = epoch_table(dirs, labels, min_fraction=0.5)
    assert best == 2
    assert "calibrated_cross_fitted" not in rows[0] and "calibrated_cross_fitted" in rows[2]  # first half only listed


def test_summary_reports_the_cross_fitted_score_with_an_interval():
    labels, probs = _fold_data(np.random.default_rng(1))
    s = oof_summary(labels, probs, bootstrap=50)
    assert s["patients"] == 180 and s["folds"] == 3 and len(s["thresholds"]) == 8 and len(s["logit_offsets"]) == 8
    lo, hi = s["score_ci95"]["final"]
    assert lo <= s["score"]["final"] <= hi
    if not s["calibration_applied"]:  # without calibration the honest score is the raw one
        assert s["score"] == s["raw"] and not any(s["logit_offsets"])
    assert s["decisions_cross_fitted"]["normal_with_disease_without_rule"] >= 0
    raw = odir_official_score(np.concatenate(labels), np.concatenate(probs))
    assert s["raw"] == raw


def test_ensemble_refuses_an_oof_record_of_other_members(tmp_path: Path):
    from training.ensemble import _from_oof

    record = {"members": [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")], "hflip_tta": True}
    path = tmp_path / "oof.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not the checkpoints given"):
        _from_oof(path, [tmp_path / "a.pt", tmp_path / "c.pt"], True)
    with pytest.raises(ValueError, match="without --hflip-tta|with --hflip-tta"):
        _from_oof(path, [tmp_path / "b.pt", tmp_path / "a.pt"], False)


def test_or_rule_follows_the_official_patient_rule():
    from training.oof import or_rule_probs

    left = np.array([[0.9, 0.1, 0, 0, 0, 0, 0, 0], [0.2, 0.8, 0, 0, 0, 0, 0, 0]], np.float32)
    right = np.array([[0.8, 0.0, 0, 0, 0, 0, 0, 0.5], [0.9, 0.0, 0, 0, 0, 0, 0, 0]], np.float32)
    p = or_rule_probs(left, right)
    assert p[0, 0] == pytest.approx(0.72) and p[0, 7] == pytest.approx(0.5)  # N needs both eyes normal
    assert p[1, 1] == pytest.approx(0.8) and p[1, 0] == pytest.approx(0.18)


def test_or_blend_lever_finds_weight_when_the_eyes_carry_the_signal():
    from training.oof import or_blend_lever

    rng = np.random.default_rng(3)
    labels, probs, eyes = [], [], []
    for _ in range(3):
        y = (rng.random((80, 8)) < 0.25).astype(np.uint8)
        y[:, 0] = y[:, 1:].sum(1) == 0
        noisy = 1 / (1 + np.exp(-(0.2 * (2 * y - 1) + rng.normal(0, 1, y.shape))))  # weak patient head
        eye = 1 / (1 + np.exp(-(3.0 * (2 * y - 1) + rng.normal(0, 0.5, y.shape))))  # strong eye head
        eye_n = np.sqrt(eye[:, 0])  # both eyes alike: their product gives back the patient N
        left, right = eye.copy(), eye * 0.2
        left[:, 0] = right[:, 0] = eye_n
        labels.append(y), probs.append(noisy.astype(np.float32)), eyes.append({"left": left, "right": right})
    lever = or_blend_lever(labels, probs, eyes, weights=(0.0, 1.0), bootstrap=30)
    assert lever["best_weight"] == 1.0 and lever["gain_ci95"][0] > 0
