"""The optional neck (``DMSNetConfig.neck_channels``): fewer channels into DMS-Net's heads, the
paper's modules unchanged, the exported graph still equal to eager PyTorch; models without a
neck (every bundle trained before it) keep their exact parameter names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dms_net_core.bundle_export import export_bundle
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.runtime import create_backend


def _heads(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))


def test_neck_shrinks_the_heads_and_keeps_outputs() -> None:
    wide = build_model(DMSNetConfig.tiny(embed_dim=32))
    slim = build_model(DMSNetConfig.tiny(embed_dim=32, neck_channels=8))
    assert _heads(slim) < _heads(wide)
    assert slim.multiscale_left.out_channels == 4  # OSIM compresses the neck's 8 channels to C/2
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = slim.eval()(left, right)
    assert [tuple(o.shape) for o in out] == [(2, 8), (2, 1, 4, 4), (2, 1, 4, 4)]


def test_models_without_neck_keep_their_state_dict_keys() -> None:
    keys = set(build_model(DMSNetConfig.tiny()).state_dict())
    assert not any(k.startswith("neck.") for k in keys)
    assert {k for k in build_model(DMSNetConfig.tiny(neck_channels=8)).state_dict() if k.startswith("neck.")}
    with pytest.raises(ValueError, match="neck_channels"):
        DMSNetConfig.tiny(neck_channels=1)


def test_neck_model_exports_and_runs_in_onnxruntime(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = DMSNetConfig.tiny(neck_channels=8, per_eye_heads=True)
    model = build_model(cfg).eval()
    bundle = export_bundle(model, cfg, PreprocessConfig(image_size=64), tmp_path / "b", name="neck")
    rng = np.random.default_rng(0)
    left, right = (rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    a = create_backend(bundle, backend="onnxruntime", device="cpu").infer(left, right)
    b = create_backend(bundle, backend="torch", device="cpu").infer(left, right)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    np.testing.assert_allclose(a.left_probabilities, b.left_probabilities, atol=1e-5)
