"""dms-net-ensemble: checkpoints -> one bundle whose ONNX gives the members' mean probability,
with thresholds tuned on validation and a held-out test report; the node's backends run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.bundle import ModelBundle
from dms_net_core.checkpoint import model_from_checkpoint
from dms_net_core.data.splits import read_split
from dms_net_core.runtime import create_backend
from test.fakes.tiny_bundle import real_pair_batch
from test.odir_data import SUBSET_LABELS as LABELS, SUBSET_SPLIT3 as SPLIT3


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """Two tiny models trained for one epoch on real pairs (seeds 0 and 1; the test subset's 3-way split)."""
    from training.train import main

    paths = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"member{seed}")
        main(["--config", "tiny_cpu", "--labels", str(LABELS), "--split-file", str(SPLIT3), "--max-train-pairs", "16",
              "--max-val-pairs", "10", "--epochs", "1", "--seed", str(seed), "--output-dir", str(out)])
        paths.append(out / "best.pt")
    return paths


def test_ensemble_bundle_is_the_mean_of_its_members_on_real_images(members, tmp_path, capsys):
    from training.ensemble import main

    out = tmp_path / "ens"
    assert main([*map(str, members), "--output", str(out), "--name", "tiny-ens", "--labels", str(LABELS),
                 "--split-file", str(SPLIT3), "--no-calibrate"]) == 0
    printed = capsys.readouterr().out
    assert "ensemble val  final" in printed and "ensemble test final" in printed

    bundle = ModelBundle.load(out)
    meta = bundle.meta
    assert [m["seed"] for m in meta["ensemble"]["members"]] == [0, 1]
    assert meta["ensemble"]["threshold_source"] == str(SPLIT3)
    sides = read_split(SPLIT3)  # thresholds are tuned on the whole val side, and the whole test side is scored
    assert (meta["metrics"]["num_patients"] == len(sides["val"])
            and meta["metrics"]["held_out_test"]["num_patients"] == len(sides["test"]))
    assert not bundle.weights_path.exists()  # deployment-only

    left, right = real_pair_batch(bundle.image_size)
    expected = []
    for path in members:
        model = model_from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
        with torch.inference_mode():
            expected.append(torch.sigmoid(model(torch.from_numpy(left), torch.from_numpy(right))[0]).numpy())
    backend = create_backend(bundle, backend="auto", device="cpu")
    assert backend.name == "onnxruntime"
    result = backend.infer(left, right)
    np.testing.assert_allclose(result.probabilities, np.mean(expected, axis=0), atol=1e-4, rtol=0)
    assert result.attention_left.shape[0] == 2
    with pytest.raises(RuntimeError, match="deployment-only"):
        create_backend(bundle, backend="torch", device="cpu")


def test_hflip_tta_ensemble_averages_each_member_over_the_pair_and_its_mirror(members, tmp_path, capsys):
    """--hflip-tta: the graph's probability is the mean over members x {pair, mirrored pair},
    the attention maps come from the unmirrored pass, and model.json says TTA is in the graph."""
    from training.ensemble import main

    out = tmp_path / "ens_tta"
    assert main([*map(str, members), "--output", str(out), "--labels", str(LABELS), "--split-file", str(SPLIT3),
                 "--no-calibrate", "--hflip-tta"]) == 0
    capsys.readouterr()
    bundle = ModelBundle.load(out)
    assert "mirror" in bundle.meta["ensemble"]["test_time_augmentation"]
    left, right = real_pair_batch(bundle.image_size)
    expected, attention = [], None
    for path in members:
        model = model_from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
        with torch.inference_mode():
            for l, r in ((left, right), (left[..., ::-1].copy(), right[..., ::-1].copy())):
                outputs = model(torch.from_numpy(l), torch.from_numpy(r))
                expected.append(torch.sigmoid(outputs[0]).numpy())
                attention = outputs[1].numpy() if attention is None else attention
    result = create_backend(bundle, backend="onnxruntime", device="cpu").infer(left, right)
    np.testing.assert_allclose(result.probabilities, np.mean(expected, axis=0), atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.attention_left, attention, atol=1e-4)
    mirrored_only = np.mean(expected[1::2], axis=0)
    assert np.abs(result.probabilities - mirrored_only).max() > 1e-3  # the unmirrored pass counts too


def test_calibrated_ensemble_adds_its_validation_fitted_offsets(members, tmp_path, capsys):
    """Default: per-class logit offsets fitted on the val side ride in the graph and in model.json."""
    from dms_net_core.calibration import apply_logit_offsets
    from training.ensemble import main

    plain, calibrated = tmp_path / "plain", tmp_path / "cal"
    common = ["--labels", str(LABELS), "--split-file", str(SPLIT3)]
    assert main([*map(str, members), "--output", str(plain), *common, "--no-calibrate"]) == 0
    assert main([*map(str, members), "--output", str(calibrated), *common]) == 0
    assert "calibration   " in capsys.readouterr().out
    meta = ModelBundle.load(calibrated).meta
    record = meta["calibration"]
    left, right = real_pair_batch(64)
    base = create_backend(ModelBundle.load(plain), backend="onnxruntime", device="cpu").infer(left, right).probabilities
    got = create_backend(ModelBundle.load(calibrated), backend="onnxruntime",
                         device="cpu").infer(left, right).probabilities
    # applied or not is decided by cross-validation within val; either way the bundle says which and is consistent
    if record["applied"]:
        assert record["fitted_on"] == "val" and record["val_cross_validated_gain"] > 0
        assert meta["model_config"]["logit_offsets"] == record["logit_offsets"]
        assert {"test_before", "test_after"} <= set(record)  # the held-out side is reported, not fitted
        np.testing.assert_allclose(got, apply_logit_offsets(base, record["logit_offsets"]), atol=1e-5)
    else:
        assert record["val_cross_validated_gain"] <= 0 and meta["model_config"]["logit_offsets"] is None
        np.testing.assert_allclose(got, base, atol=1e-6)


def test_calibration_is_applied_only_when_it_generalises_within_validation():
    from dms_net_core.calibration import apply_logit_offsets
    from test.unit.test_calibration import _under_called
    from training.ensemble import calibrate
    from training.evaluate import PairPredictions

    def preds(labels, probs):
        return PairPredictions(labels, probs, {}, None)

    labels, probs = _under_called(400, seed=1)  # one class ranked right but cut wrong: offsets generalise
    test_labels, test_probs = _under_called(300, seed=2)
    record, val, test = calibrate(preds(labels, probs), preds(test_labels, test_probs))
    assert record["applied"] and record["val_cross_validated_gain"] > 0
    assert record["test_after"]["final"] > record["test_before"]["final"]  # it generalises to unseen data too
    np.testing.assert_allclose(test.probs, apply_logit_offsets(test_probs, record["logit_offsets"]), atol=1e-6)
    rng = np.random.default_rng(3)  # uninformative but already well placed (all below 0.5 at 30 % prevalence):
    noise_labels = (rng.random((300, 8)) < 0.3).astype(np.uint8)  # offsets could only fit noise
    record, val, _ = calibrate(preds(noise_labels, rng.uniform(0.2, 0.4, (300, 8)).astype(np.float32)), None)
    assert not record["applied"] and val.probs.dtype == np.float32


def test_members_with_different_preprocessing_are_refused_in_one_line(members, tmp_path, capsys):
    from training.ensemble import main

    ck = torch.load(members[1], map_location="cpu", weights_only=True)
    ck["preprocess"] = {**ck["preprocess"], "illumination_correction": True}
    other = tmp_path / "other.pt"
    torch.save(ck, other)
    assert main([str(members[0]), str(other), "--output", str(tmp_path / "x"), "--no-tune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preprocesses differently" in err[0]
    assert not (tmp_path / "x" / "model.json").exists()


def test_untuned_ensemble_keeps_member_thresholds_and_says_so(members, tmp_path, capsys):
    from training.ensemble import main

    assert main([*map(str, members), "--output", str(tmp_path / "e"), "--no-tune"]) == 0
    assert "mean of the members'" in capsys.readouterr().out
    meta = json.loads((tmp_path / "e" / "model.json").read_text())
    mean = np.mean([torch.load(p, map_location="cpu", weights_only=True)["thresholds"] for p in members], axis=0)
    np.testing.assert_allclose(meta["thresholds"], mean, atol=1e-6)
    assert meta["metrics"] == {}


def test_one_checkpoint_is_not_an_ensemble(tmp_path, capsys):
    from training.ensemble import main

    assert main([str(tmp_path / "a.pt"), "--output", str(tmp_path / "e")]) == 2
    assert "needs 2 or more" in capsys.readouterr().err
