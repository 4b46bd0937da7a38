"""An ensemble of members that share their frozen stem and early stages runs that prefix once,
with the numbers of running every member whole (`dms_net_core.model.stage_split`)."""

from __future__ import annotations

import pytest
import torch

from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from dms_net_core.model.ensemble import EnsembleNet
from dms_net_core.model.stage_split import shared_frozen_prefix
from dms_net_core.model.tta import HorizontalFlipTTA

SIZE = 64


def _lite0_member(seed: int, trained_from_stage: int) -> torch.nn.Module:
    """A per-eye Lite0 whose stages from ``trained_from_stage`` on (and heads) differ by seed:
    what members trained from one feature bank look like."""
    cfg = DMSNetConfig(architecture="plain_binocular", backbone="efficientnet_lite0", image_size=SIZE,
                       per_eye_heads=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(100 + seed)
    blocks = model.backbone.model.blocks
    with torch.no_grad():
        for module in [*list(blocks)[trained_from_stage:], model.classifier, model.eye_classifier]:
            for p in module.parameters():
                p.add_(0.05 * torch.randn_like(p))
        for m in list(blocks)[trained_from_stage:]:  # batch-norm statistics move too in training
            for name, b in m.named_buffers():
                if name.endswith("running_mean"):
                    b.add_(0.01 * torch.randn_like(b))
    return model.eval()


@pytest.fixture(scope="module")
def members() -> list[torch.nn.Module]:
    return [_lite0_member(seed, trained_from_stage=4) for seed in range(3)]


def test_the_longest_identical_prefix_is_found_and_a_different_stem_shares_nothing(members):
    assert shared_frozen_prefix(members) == 4
    other = _lite0_member(9, trained_from_stage=2)
    assert shared_frozen_prefix([*members, other]) == 2
    with torch.no_grad():
        other.backbone.model.conv_stem.weight.mul_(1.01)
    assert shared_frozen_prefix([members[0], other]) == -1
    tiny = [build_model(DMSNetConfig.tiny()) for _ in range(2)]
    assert shared_frozen_prefix(tiny) == -1  # a backbone that cannot be cut


@pytest.mark.parametrize("mirror", [False, True])
def test_shared_prefix_ensemble_gives_the_whole_members_numbers(members, mirror):
    torch.manual_seed(1)
    left, right = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    whole = [HorizontalFlipTTA(m) if mirror else m for m in members]
    reference = EnsembleNet(whole, per_eye=True, logit_offsets=[0.5, -0.5, 0, 0, 0, 0, 0.25, 0]).eval()
    shared = EnsembleNet(members, per_eye=True, logit_offsets=[0.5, -0.5, 0, 0, 0, 0, 0.25, 0], mirror=mirror,
                         prefix_stage=4).eval()
    with torch.inference_mode():
        expected = reference(left, right, with_cams=True)
        got = shared(left, right, with_cams=True)
    assert len(got) == len(expected) == 7
    for a, b in zip(got, expected):  # logits, attention, per-eye logits, class activation maps
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(torch.sigmoid(got[0]), torch.sigmoid(members[0](left, right)[0]), atol=1e-3)


def test_a_prefix_longer_than_the_shared_one_is_refused_in_one_line(members):
    with pytest.raises(ValueError, match="share their stem and first 4 stages only"):
        EnsembleNet(members, per_eye=True, prefix_stage=5)
