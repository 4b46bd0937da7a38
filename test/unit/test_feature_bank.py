"""The CPU feature-bank trainer (issue 22, item 1) on REAL ODIR eyes from the shipped subset,
with the real ImageNet EfficientNet-Lite0 at 64 px: the banked model computes exactly what the
image model computes, a bank run trains (one-eye patients included), resumes bit-exactly,
reuses its bank, and refuses a bank built for other settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from test.odir_data import SUBSET_LABELS, SUBSET_SPLIT3

SMALL = ["--model", "image_size=64", "--preprocess", "image_size=64"]


def _args(tmp_path, out: str, *extra: str) -> list[str]:
    return ["--config", "plain_binocular_per_eye_lite0", *SMALL, "--labels", str(SUBSET_LABELS),
            "--split-file", str(SUBSET_SPLIT3), "--feature-bank", str(tmp_path / "bank"), "--bank-views", "2",
            "--frozen-stages", "5", "--bank-stage", "4", "--batch-size", "8", "--amp-dtype", "bf16",
            "--no-progress", "--no-tensorboard", "--output-dir", str(tmp_path / out), *extra]


def test_from_stage_runs_the_same_model_on_banked_features():
    from dms_net_core.model.stage_split import FromStage

    torch.manual_seed(0)
    cfg = DMSNetConfig.from_dict(dict(architecture="plain_binocular", backbone="efficientnet_lite0",
                                      pretrained="imagenet", image_size=64, per_eye_heads=True))
    model = build_model(cfg).eval()
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    net = FromStage(model, 4).eval()
    with torch.no_grad():
        want = model(left, right)
        got = net(model.backbone.forward_prefix(left, 4), model.backbone.forward_prefix(right, 4))
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # FromStage shares the parameters: a step on it is a step on the model
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    assert set(model.state_dict()) == {k[len("model."):] for k in net.state_dict() if k.startswith("model.")}


def test_bank_run_trains_one_eye_patients_resumes_and_reuses_its_bank(tmp_path):
    from training.train import main

    a = main(_args(tmp_path, "a", "--epochs", "2"))
    meta = json.loads((tmp_path / "bank" / "meta.json").read_text())
    assert meta["views_done"] == [0, 1, 2]
    ckpt = torch.load(tmp_path / "a" / "best.pt", map_location="cpu", weights_only=True)
    summary = ckpt["data_summary"]
    assert summary["one_eye_patients_trained"] > 0  # the subset has one-eye patients
    assert summary["feature_bank"]["stage"] == 4 and len(ckpt["thresholds"]) == 8
    assert "held_out_test" in ckpt["metrics"] and np.isfinite(a["val"]["final"])
    assert "decisions" in ckpt["metrics"]  # the coherent decision's score is reported beside the official one
    bank_mtime = (tmp_path / "bank" / "features.f16").stat().st_mtime_ns

    main(_args(tmp_path, "b", "--epochs", "2", "--max-epochs-this-run", "1"))
    main(_args(tmp_path, "b", "--epochs", "2", "--resume", str(tmp_path / "b" / "last.pt")))
    assert (tmp_path / "bank" / "features.f16").stat().st_mtime_ns == bank_mtime  # reused, not rebuilt
    last_a = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)["model"]
    for key in last_a:
        torch.testing.assert_close(last_a[key], last_b[key], rtol=0, atol=0, msg=key)


def test_bank_built_for_other_settings_is_refused(tmp_path):
    from training.train import main

    main(_args(tmp_path, "a", "--epochs", "1"))
    with pytest.raises(SystemExit) as err:
        main(_args(tmp_path, "c", "--epochs", "1", "--bank-seed", "7"))
    assert err.value.code == 2


def test_bank_refuses_cutmix_and_unfrozen_banked_stages(tmp_path):
    from training.train import main

    with pytest.raises(SystemExit):
        main(_args(tmp_path, "d", "--epochs", "1", "--augment", "cutmix_prob=0.5"))
    with pytest.raises(SystemExit):
        main(_args(tmp_path, "e", "--epochs", "1", "--frozen-stages", "3"))
