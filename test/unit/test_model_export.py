"""ONNX export of the tiny model (dynamic batch, ONNX Runtime == eager) and of OSIM at the feature
sizes real backbones produce (7x7, 8x8, 14x14: image sizes 224, 256, 448)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.model.osim import OSIM

ort = pytest.importorskip("onnxruntime")

OUTPUTS = ["logits", "attention_left", "attention_right"]


def _export(model: torch.nn.Module, example: tuple, path, input_names: list[str], output_names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={n: {0: "batch"} for n in input_names + output_names},
            opset_version=17,
            dynamo=False,
        )


@pytest.mark.parametrize("overrides", [{}, dict(architecture="plain_binocular")], ids=["dms_net", "plain_binocular"])
def test_tiny_model_onnx_matches_eager_with_dynamic_batch(tmp_path, overrides: dict) -> None:
    torch.manual_seed(0)
    cfg = DMSNetConfig.tiny(**overrides)
    model = build_model(cfg).eval()
    example = (torch.randn(2, 3, cfg.image_size, cfg.image_size), torch.randn(2, 3, cfg.image_size, cfg.image_size))
    path = tmp_path / "model.onnx"
    _export(model, example, path, ["left", "right"], OUTPUTS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == OUTPUTS
    for batch in (1, 3):  # neither is the traced batch size
        left = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
        right = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
        with torch.no_grad():
            expected = model(left, right)
        got = session.run(None, {"left": left.numpy(), "right": right.numpy()})
        for name, g, e in zip(OUTPUTS, got, expected):
            assert g.shape == tuple(e.shape), name
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("feature_size", [7, 8, 14])
def test_osim_exports_at_real_feature_sizes(tmp_path, feature_size: int) -> None:
    """adaptive 4x4 pooling from 7x7/14x14 is not exportable with F.adaptive_avg_pool2d; ours is."""
    torch.manual_seed(0)
    osim = OSIM(16).eval()
    x = torch.randn(2, 16, feature_size, feature_size)
    path = tmp_path / "osim.onnx"
    _export(osim, (x,), path, ["x"], ["features", "attention"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = torch.randn(3, 16, feature_size, feature_size)
    with torch.no_grad():
        expected = osim(x3)
    for g, e in zip(session.run(None, {"x": x3.numpy()}), expected):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-5)


def test_ablated_attention_stays_dynamic_in_onnx(tmp_path) -> None:
    """All-ones attention maps (no OSIM) must follow the runtime batch, not the traced one."""
    torch.manual_seed(0)
    cfg = DMSNetConfig.tiny(use_osim_left=False)
    model = build_model(cfg).eval()
    example = (torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    path = tmp_path / "model.onnx"
    _export(model, example, path, ["left", "right"], OUTPUTS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64).numpy()
    _, att_left, att_right = session.run(None, {"left": x, "right": x})
    assert att_left.shape == att_right.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(att_left, np.ones_like(att_left))
