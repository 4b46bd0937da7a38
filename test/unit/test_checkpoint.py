"""The checkpoint format's one owner (`dms_net_core.checkpoint`): what the trainer writes is
what export, evaluation and ensembles rebuild, weight for weight; a misfit is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dms_net_core.checkpoint import (
    checkpoint_preprocess,
    checkpoint_thresholds,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
)
from dms_net_core.classes import NUM_CLASSES
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model


def _saved(tmp_path, cfg: DMSNetConfig, **kw):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = make_checkpoint(model.state_dict(), cfg, PreprocessConfig(image_size=cfg.image_size), metrics={}, data_summary={},
                           epoch=1, step=2, args={"seed": 0}, **kw)
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    return model, path


def test_written_checkpoint_rebuilds_the_same_network(tmp_path):
    cfg = DMSNetConfig.tiny(per_eye_heads=True)
    model, path = _saved(tmp_path, cfg)
    ckpt = load_checkpoint(path)
    rebuilt = model_from_checkpoint(ckpt)
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        for a, b in zip(model(x, x.flip(0)), rebuilt(x, x.flip(0))):
            torch.testing.assert_close(a, b)
    assert checkpoint_preprocess(ckpt) == PreprocessConfig(image_size=cfg.image_size)
    np.testing.assert_array_equal(checkpoint_thresholds(ckpt), np.full(NUM_CLASSES, 0.5, np.float32))


def test_tuned_thresholds_and_old_checkpoints_without_preprocess(tmp_path):
    cfg = DMSNetConfig.tiny()
    _, path = _saved(tmp_path, cfg, thresholds=[0.25] * NUM_CLASSES)
    ckpt = load_checkpoint(path)
    assert checkpoint_thresholds(ckpt).tolist() == [0.25] * NUM_CLASSES
    del ckpt["preprocess"]
    assert checkpoint_preprocess(ckpt).image_size == cfg.image_size


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    _, path = _saved(tmp_path, DMSNetConfig.tiny())
    ckpt = load_checkpoint(path)
    ckpt["model_config"] = DMSNetConfig.tiny(per_eye_heads=True).to_dict()  # a head the weights lack
    with pytest.raises(ValueError, match="do not fit model_config") as err:
        model_from_checkpoint(ckpt)
    assert "\n" not in str(err.value) and "missing" in str(err.value)
    ckpt["model_config"] = DMSNetConfig.tiny(embed_dim=24).to_dict()  # same names, other shapes
    with pytest.raises(ValueError, match="do not fit model_config") as err:
        model_from_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_a_dict_without_weights_is_not_a_checkpoint(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'model'/'model_config'"):
        load_checkpoint(tmp_path / "other.pt")
