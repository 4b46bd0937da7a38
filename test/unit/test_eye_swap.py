"""Left/right swap of training pairs (`dms-net-train --swap-eyes`, training/eye_swap.py): the two
eyes trade places together with their own labels, nothing is drawn when the lever is off, and
both trainers (images, feature bank) run with it on real ODIR eyes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test.odir_data import SUBSET_LABELS, SUBSET_SPLIT, SUBSET_SPLIT3
from training.eye_swap import swap_pair_rows, swap_pair_tensors


def test_bank_rows_swap_whole_pairs_and_off_draws_nothing():
    rows = np.arange(40).reshape(20, 2)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert swap_pair_rows(rows, 0.0, rng) is rows and rng.bit_generator.state == state
    np.testing.assert_array_equal(swap_pair_rows(rows, 1.0, rng), rows[:, ::-1])
    half = swap_pair_rows(rows, 0.5, np.random.default_rng(1))
    swapped = half[:, 0] == rows[:, 1]
    assert 0 < swapped.sum() < len(rows)
    np.testing.assert_array_equal(np.sort(half, axis=1), rows)  # every pair keeps its two eyes


def test_image_batch_swaps_images_labels_and_known_flags_together():
    n = 40
    batch = {"left": torch.zeros(n, 3, 4, 4, dtype=torch.uint8), "right": torch.ones(n, 3, 4, 4, dtype=torch.uint8),
             "eye_left": torch.zeros(n, 8), "eye_right": torch.ones(n, 8),
             "eye_known": torch.tensor([[True, False]] * n)}
    assert swap_pair_tensors(batch, 0.0) is batch
    out = swap_pair_tensors(batch, 1.0)
    assert (out["left"] == 1).all() and (out["right"] == 0).all()
    assert (out["eye_left"] == 1).all() and (out["eye_right"] == 0).all()
    assert out["eye_known"].tolist() == [[False, True]] * n
    torch.manual_seed(3)
    half = swap_pair_tensors(batch, 0.5)
    moved = half["left"].flatten(1)[:, 0] == 1
    assert 0 < moved.sum() < n
    assert torch.equal(half["eye_left"][:, 0] == 1, moved) and torch.equal(half["eye_known"][:, 1], moved)


def test_trainers_run_with_the_lever_and_refuse_a_bad_probability(tmp_path):
    from training.train import main

    tiny = ["--config", "tiny_cpu", "--labels", str(SUBSET_LABELS), "--split-file", str(SUBSET_SPLIT),
            "--max-train-pairs", "24", "--max-val-pairs", "16", "--no-progress", "--no-tensorboard", "--epochs", "1"]
    off = main([*tiny, "--output-dir", str(tmp_path / "off")])
    on = main([*tiny, "--output-dir", str(tmp_path / "on"), "--swap-eyes", "1.0"])
    w_off = torch.load(tmp_path / "off" / "last.pt", map_location="cpu", weights_only=True)["model"]
    w_on = torch.load(tmp_path / "on" / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert np.isfinite(on["val"]["final"]) and np.isfinite(off["val"]["final"])
    assert any(not torch.equal(w_off[k], w_on[k]) for k in w_off if w_off[k].is_floating_point())
    bank = ["--config", "plain_binocular_per_eye_lite0", "--model", "image_size=64", "--preprocess", "image_size=64",
            "--labels", str(SUBSET_LABELS), "--split-file", str(SUBSET_SPLIT3), "--feature-bank",
            str(tmp_path / "bank"), "--bank-views", "1", "--frozen-stages", "5", "--bank-stage", "4",
            "--batch-size", "8", "--epochs", "1", "--no-progress", "--no-tensorboard", "--swap-eyes", "0.5",
            "--output-dir", str(tmp_path / "bank_run")]
    banked = main(bank)
    # benchmarks/eye_order_tta.py scores the run in both eye orders; as trained it reproduces the run
    from benchmarks.eye_order_tta import order_scores

    orders = order_scores(tmp_path / "bank_run")
    assert orders["swap_eyes"] == 0.5
    assert orders["val"]["left_right"] == pytest.approx(banked["val"]["final"], abs=1e-6)
    assert orders["test"]["left_right"] == pytest.approx(banked["test"]["final"], abs=1e-6)
    assert all(np.isfinite(v) for side in ("val", "test") for v in orders[side].values())
    with pytest.raises(SystemExit):
        main([*tiny, "--output-dir", str(tmp_path / "bad"), "--swap-eyes", "1.5"])
