"""Class activation maps (CAM) of a per-eye head that is linear on globally average-pooled features.

Why CAM and not Grad-CAM: the plain binocular control's per-eye head is ``logits = W GAP(F) + b``
on the eye's last backbone feature map F [B,C,h,w]. A linear map commutes with the average, so
the head applied at every position,

    CAM_k(x, y) = sum_c W[k, c] F_c(x, y) + b_k            (a 1x1 convolution with the head's weights)

is a map whose spatial mean *is* the eye's logit for class k: the evidence is the model's own
arithmetic, not an approximation, and costs one 1x1 convolution of C -> K channels at the
feature resolution (8 x 8 for a 256 px EfficientNet-Lite0 eye). The bias is included so that
mean(CAM_k) == logit_k exactly; a display normalises a map anyway (`dms_net_core.evidence`).

Models that can produce them say so with a ``provides_cams`` attribute and accept
``forward(left, right, with_cams=True)``, which appends ``cam_left, cam_right`` [B,K,h,w] to the
usual outputs. The default forward is unchanged (training and evaluation never see CAMs);
`CamOutputs` is what an exporter traces to put them into the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_activation_maps(classifier: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """``classifier`` (K <- C) applied at every position of ``features`` [B,C,h,w] -> [B,K,h,w]."""
    weight = classifier.weight.to(features.dtype)[:, :, None, None]
    bias = None if classifier.bias is None else classifier.bias.to(features.dtype)
    return F.conv2d(features, weight, bias)


def provides_cams(model: nn.Module) -> bool:
    """True when ``model(left, right, with_cams=True)`` appends per-eye class activation maps."""
    return bool(getattr(model, "provides_cams", False))


def mean_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """The mean of several [B,K,h,w] maps; maps of another resolution (a member with another
    backbone stride) are resampled bilinearly to the first one's before averaging."""
    size = maps[0].shape[-2:]
    same = [m if m.shape[-2:] == size else F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
            for m in maps]
    return torch.stack([m.float() for m in same], dim=0).mean(dim=0)


class CamOutputs(nn.Module):
    """``forward(left, right)`` = ``model(left, right, with_cams=True)``: the module an ONNX export
    traces so the graph gets the ``cam_left``/``cam_right`` outputs (holds no weights of its own)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not provides_cams(model):
            raise ValueError(f"{type(model).__name__} has no class activation maps: "
                             "only plain binocular models with per-eye heads "
                             "(or ensembles with such a member) provide them")
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(left, right, with_cams=True)
