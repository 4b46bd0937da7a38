"""HorizontalFlipTTA keeps the wrapped model's output layout, per-eye outputs included, so a
bundle with TTA is read by every consumer exactly like one without."""

from __future__ import annotations

import torch

from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from dms_net_core.model.tta import HorizontalFlipTTA


def test_per_eye_outputs_are_averaged_over_the_mirror_and_stay_in_their_eye():
    torch.manual_seed(0)
    model = build_model(DMSNetConfig.tiny(per_eye_heads=True)).eval()
    left, right = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        plain = model(left, right)
        mirrored = model(left.flip(-1), right.flip(-1))
        wrapped = HorizontalFlipTTA(model)(left, right)
    assert len(wrapped) == len(plain) == 5
    for i in (0, 3, 4):  # patient, left-eye, right-eye logits
        expected = (torch.sigmoid(plain[i]) + torch.sigmoid(mirrored[i])) / 2
        torch.testing.assert_close(torch.sigmoid(wrapped[i]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(wrapped[1], plain[1])  # attention of the unmirrored pass
    assert not torch.allclose(wrapped[3], wrapped[4])  # left and right eye stay distinct
