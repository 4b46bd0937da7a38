"""BatchNorm folding (the PyTorch backend's default) keeps the model's outputs and undoes itself when unsafe."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from dms_net_core.runtime.batchnorm_folding import fold_batchnorm
from test.fakes.tiny_bundle import real_pair_batch


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _preactivation_bns(model: nn.Module) -> int:
    """BNs fed by a concat (the dual-path blocks' BN-ReLU-conv layers): nothing to fold them into."""
    blocks = (model.ccam.block, model.ciam.block)
    return sum(len(block.layers) + 1 for block in blocks)  # body[0] of each layer + the transition's BN


def test_folding_real_imagenet_effnet_keeps_probabilities_on_real_fundus_images() -> None:
    """Real ImageNet BN statistics (timm BatchNormAct2d, Conv2dSame) and real images: same outputs
    (fp32 rounding: 1e-4 on probabilities, 3e-4 on the attention maps, where 1.04e-4 was measured
    on the test subset's first two patients)."""
    torch.manual_seed(0)
    model = build_model(DMSNetConfig(backbone="efficientnet_lite0", pretrained="imagenet", image_size=128)).eval()
    left, right = (torch.from_numpy(a) for a in real_pair_batch(128))
    with torch.inference_mode():
        reference = [t.clone() for t in model(left, right)]
    before = _count_bn(model)

    folded = fold_batchnorm(model, (left[:1], right[:1]))

    assert folded > 50  # every conv->BN of the backbone and the heads
    assert _count_bn(model) == before - folded == _preactivation_bns(model)
    with torch.inference_mode():
        logits, att_l, att_r = model(left, right)
    torch.testing.assert_close(torch.sigmoid(logits), torch.sigmoid(reference[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(att_l, reference[1], atol=3e-4, rtol=0)
    torch.testing.assert_close(att_r, reference[2], atol=3e-4, rtol=0)


class _ReadsRawConvOutput(nn.Module):
    """conv -> BN, but the raw conv output is also added back: folding here would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_unsafe_fold_is_undone_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    model = _ReadsRawConvOutput().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        reference = model(x).clone()
    with caplog.at_level(logging.WARNING, logger="dms_net_core.runtime"):
        assert fold_batchnorm(model, (x,)) == 0
    assert "undone" in caplog.text
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is not None and model.conv.bias.shape == (4,)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference)


def test_folding_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match="model.eval"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), (torch.randn(1, 3, 4, 4),))


def test_a_conv_called_twice_is_not_folded() -> None:
    """A shared conv feeding two different BNs cannot absorb either of them."""

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn_a, self.bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.bn_a(self.conv(a)) + self.bn_b(self.conv(b))

    model = Shared().eval()
    assert fold_batchnorm(model, (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4))) == 0
    assert _count_bn(model) == 2


def test_a_conv_run_twice_into_the_same_bn_is_folded() -> None:
    """The mirrored pass of an ensemble (`EnsembleNet(mirror=True)`) runs every conv -> BN twice:
    still one BN per conv, so it folds; unfolded, an fp16 bundle rounded its weights twice."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.bn(self.conv(x.flip(-1))).flip(-1)

    model = Twice().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        reference = model(x).clone()
    assert fold_batchnorm(model, (x,)) == 1
    assert _count_bn(model) == 0
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference)


def test_a_mirrored_ensemble_folds_as_many_batchnorms_as_an_unmirrored_one() -> None:
    """`export_bundle(weights_dtype="fp16")` folds before rounding: with the mirror folding nothing,
    five bank members' fp16 bundle failed its export check (RESULTS 1l: 1.74e-3 > 5e-4)."""
    from dms_net_core.model.ensemble import EnsembleNet
    from test.fakes.tiny_bundle import build_tiny_model

    example = (torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    folded = {}
    for mirror in (False, True):
        members = [build_tiny_model(seed) for seed in (0, 1)]
        folded[mirror] = fold_batchnorm(EnsembleNet(members, mirror=mirror).eval(), example)
    assert folded[True] == folded[False] > 0
