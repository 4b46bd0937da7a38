"""Horizontal-flip test-time augmentation as a module, so it lives inside the one ONNX graph.

Training flips each eye left-right with probability 0.5 (`dms_net_core.data.augment`), so a
mirrored pair is an input the model has learned; averaging the probabilities of the pair and
its mirror cancels part of the model's orientation-dependent error. It costs one more forward
pass per pair, which is why it is an export option (``dms-net-ensemble --hflip-tta``) measured
on the validation side, not a default.

Both eyes are mirrored and stay in their slots (no left/right swap): the per-eye augmentation
never swapped eyes either, and the per-eye outputs keep meaning "left eye" and "right eye".
Attention maps come from the unmirrored pass, so the overlay still lines up with the image
the clinician sees. Class activation maps (``with_cams=True``, `dms_net_core.model.cam`) are
averaged over both passes like the probabilities, the mirrored pass's maps flipped back first so
that both describe the unmirrored image.
"""

from __future__ import annotations

import torch
from torch import nn

from .cam import provides_cams
from .ensemble import merge_mirrored


class HorizontalFlipTTA(nn.Module):
    """``forward(left, right)`` of ``model`` on the pair and its mirror, probabilities averaged.

    Outputs have the wrapped model's layout: ``(logits, att_left, att_right[, left_logits,
    right_logits])`` with every logit = logit(mean p over the two passes).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.provides_cams = provides_cams(model)

    def forward(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool = False) -> tuple[torch.Tensor, ...]:
        kwargs = {"with_cams": True} if with_cams else {}
        plain = self.model(left, right, **kwargs)
        mirrored = self.model(left.flip(-1), right.flip(-1), **kwargs)
        return merge_mirrored(plain, mirrored, with_cams)
