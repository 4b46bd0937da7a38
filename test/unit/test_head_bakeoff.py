"""The head bake-off (`dms-net-head-bakeoff`, issue 22 item 5) on REAL ODIR eyes from the shipped
subset, with the real ImageNet Lite0 at 64 px: the derived final-feature bank gives the control
exactly its own outputs, every head trains on it with per-eye outputs, results are resumable
files, and a checkpoint that did not train from a bank is refused with its fix."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from test.odir_data import SUBSET_LABELS, SUBSET_SPLIT3

SMALL = ["--model", "image_size=64", "--preprocess", "image_size=64"]


def _train_control(tmp_path) -> str:
    from training.train import main

    main(["--config", "plain_binocular_per_eye_lite0", *SMALL, "--labels", str(SUBSET_LABELS),
          "--split-file", str(SUBSET_SPLIT3), "--feature-bank", str(tmp_path / "bank"), "--bank-views", "2",
          "--frozen-stages", "5", "--bank-stage", "4", "--batch-size", "8", "--amp-dtype", "bf16", "--epochs", "1",
          "--max-train-pairs", "16", "--max-val-pairs", "8",
          "--no-one-eye-patients", "--no-progress", "--no-tensorboard", "--output-dir", str(tmp_path / "control")])
    return str(tmp_path / "control" / "best.pt")


def test_bakeoff_trains_every_head_on_the_control_backbones_features(tmp_path, capsys):
    from dms_net_core.checkpoint import checkpoint_args, load_checkpoint, model_from_checkpoint
    from dms_net_core.model.stage_split import FromStage
    from training.head_bakeoff import HeadsOnFeatures, derive_final_bank, main
    from training.train import build_configs, load_bank_data

    control_pt = _train_control(tmp_path)
    out = tmp_path / "bakeoff"
    assert main(["--control", control_pt, "--output-dir", str(out), "--seeds", "0", "--epochs", "1"]) == 0
    results = {h: json.loads((out / f"{h}_s0.json").read_text()) for h in ("control", "dms_slim", "dms_full")}
    params = {h: r["head_params"] for h, r in results.items()}
    assert params["control"] < params["dms_slim"] < params["dms_full"]  # three different heads
    for r in results.values():
        assert np.isfinite(r["val"]["final"]) and np.isfinite(r["test"]["final"]) and len(r["per_epoch"]) == 1
    table = (out / "summary.md").read_text()
    assert table.count("\n") == 5 and "| dms_full |" in table

    # the derived bank's plain view is the trained backbone's final map: the control's head on
    # it gives the control's own logits from its stage-4 features (fp16 storage tolerance)
    ckpt = load_checkpoint(control_pt)
    control = model_from_checkpoint(ckpt).eval()
    args = argparse.Namespace(**checkpoint_args(ckpt))
    source, data, _, _ = load_bank_data(args, *build_configs(args))
    derived = derive_final_bank(source, control.backbone, out / "bank")  # reopened, not rebuilt
    eyes = np.concatenate([data["val"]["rows"][:4, 0], data["val"]["rows"][:4, 1]])
    assert len(data["train"]["rows"]) == 16  # the bake-off reads the control run's own data limits
    final = torch.from_numpy(np.asarray(derived.features[0][eyes])).float()
    prefix = torch.from_numpy(np.asarray(source.features[0][eyes])).float()
    with torch.no_grad():
        want = FromStage(control, 4)(prefix[:4], prefix[4:])
        got = HeadsOnFeatures(control)(final[:4], final[4:])
    assert len(got) == len(want) == 5  # patient logits, attention maps, per-eye logits
    torch.testing.assert_close(got[0], want[0], atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(got[3], want[3], atol=2e-2, rtol=1e-2)

    # a second call trains nothing: every result file is read back
    capsys.readouterr()
    main(["--control", control_pt, "--output-dir", str(out), "--seeds", "0", "--epochs", "1"])
    assert "epoch 0:" not in capsys.readouterr().out


def test_bakeoff_refuses_a_control_trained_from_images(tmp_path, capsys):
    from training.head_bakeoff import main
    from training.train import main as train

    train(["--config", "tiny_cpu", "--labels", str(SUBSET_LABELS), "--split-file", str(SUBSET_SPLIT3), "--epochs", "1",
           "--max-train-pairs", "16", "--no-progress", "--no-tensorboard", "--output-dir", str(tmp_path / "img")])
    with pytest.raises(SystemExit) as err:
        main(["--control", str(tmp_path / "img" / "best.pt"), "--output-dir", str(tmp_path / "b")])
    assert err.value.code == 2
    assert "was not trained from a feature bank" in capsys.readouterr().err
