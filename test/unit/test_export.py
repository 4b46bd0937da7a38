"""dms-net-export: a real checkpoint file (training's format) becomes a loadable, checked bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dms_net_core.bundle import ModelBundle
from dms_net_core.checkpoint import load_checkpoint
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.export import main
from test.fakes.tiny_bundle import build_tiny_model, tiny_config


def _write_checkpoint(path, thresholds):
    cfg = tiny_config()
    model = build_tiny_model(seed=3)
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": cfg.to_dict(),
            "preprocess": PreprocessConfig(image_size=cfg.image_size).to_dict(),
            "thresholds": thresholds,
            "metrics": {"kappa": 0.41, "auc": 0.8},
            "data_summary": {"train_patients": 10},
            "epoch": 3,
            "step": 30,
            "args": {"lr": 1e-3},
        },
        path,
    )
    return model


def test_checkpoint_to_bundle(tmp_path, capsys):
    thresholds = [0.5, 0.4, 0.3, 0.35, 0.3, 0.25, 0.4, 0.45]
    model = _write_checkpoint(tmp_path / "best.pt", thresholds)
    rc = main([str(tmp_path / "best.pt"), "--output", str(tmp_path / "bundle"), "--name", "ckpt-test"])
    out = capsys.readouterr().out
    assert rc == 0
    bundle = ModelBundle.load(tmp_path / "bundle")
    assert bundle.model_id in out and "PASS" in out
    np.testing.assert_allclose(bundle.thresholds, thresholds, atol=1e-6)
    assert bundle.meta["metrics"] == {"kappa": 0.41, "auc": 0.8}
    assert bundle.meta["data_summary"] == {"train_patients": 10}
    # the bundle's weights are the checkpoint's weights
    from safetensors.torch import load_file

    saved = load_file(str(bundle.weights_path))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(saved[k], v)


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    rc = main([str(tmp_path / "nope.pt"), "--output", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "not found" in err


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt or not a dms-net-train checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
