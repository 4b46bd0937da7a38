"""A model cut after backbone stage K: the frozen prefix computed once, the rest run on its output.

Two users need the cut, for the same reason (the stem and early stages are a fixed function):

- training from a feature bank (`training.bank_train`): the prefix's outputs over augmented
  views are stored once, and epochs run only `FromStage` (the model after stage K);
- an ensemble whose members share a frozen prefix bit for bit (members trained from one bank
  keep the ImageNet stem and early stages untouched): `shared_frozen_prefix` finds the longest
  such prefix and the ensemble runs it once per eye instead of once per member
  (`dms_net_core.model.ensemble.EnsembleNet`), the same numbers for less inference time.

`FromStage` is the model with its backbone replaced by "the backbone after stage K" (the same
parameter objects, nothing copied), so the model's own ``forward`` (heads, per-eye head, class
activation maps, calibration) runs unchanged on the prefix's feature maps. Backbones that can be
cut have ``forward_prefix(x, k)`` and ``forward_from_stage(x, k)`` (EfficientNet-Lite,
`dms_net_core.model.backbones`).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn


class _BackboneFromStage(nn.Module):
    def __init__(self, backbone: nn.Module, stage: int) -> None:
        super().__init__()
        self.inner = backbone
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_from_stage(x, self.stage)


class BackbonePrefix(nn.Module):
    """The stem and the first ``stage`` stages of ``backbone``: images -> stage-K feature maps."""

    def __init__(self, backbone: nn.Module, stage: int) -> None:
        super().__init__()
        self.inner = backbone
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_prefix(x, self.stage)


class FromStage(nn.Module):
    """``model`` fed with stage-``stage`` feature maps instead of images (shares its parameters)."""

    def __init__(self, model: nn.Module, stage: int) -> None:
        super().__init__()
        if not can_cut(model):
            raise ValueError(f"{type(model).__name__}'s backbone cannot be cut after a stage "
                             "(it needs forward_prefix/forward_from_stage: an EfficientNet-Lite backbone)")
        net = copy.copy(model)  # a new Module object whose submodule table we may change ...
        net._modules = dict(model._modules)  # ... without touching the original's
        net._modules["backbone"] = _BackboneFromStage(model.backbone, stage)
        self.net = net
        self.model = model
        self.stage = stage
        self.provides_cams = bool(getattr(model, "provides_cams", False))

    def forward(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool = False) -> tuple[torch.Tensor, ...]:
        return self.net(left, right, with_cams=True) if with_cams else self.net(left, right)

    def single_eye_logits(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.net.backbone(features).float().mean(dim=(2, 3))
        return self.model.eye_classifier(self.model.dropout(pooled))


def can_cut(model: nn.Module) -> bool:
    """True when ``model.backbone`` has the prefix/rest split `FromStage` needs."""
    backbone = getattr(model, "backbone", None)
    return (hasattr(backbone, "forward_prefix") and hasattr(backbone, "forward_from_stage")
            and hasattr(backbone, "model"))


def _prefix_tensors(model: nn.Module, stage: int) -> list[torch.Tensor]:
    """Every parameter and buffer that ``forward_prefix(x, stage)`` of ``model.backbone`` reads."""
    timm_net = model.backbone.model
    modules = [timm_net.conv_stem, timm_net.bn1, *list(timm_net.blocks)[:stage]]
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


def shared_frozen_prefix(members: Sequence[nn.Module]) -> int:
    """The largest K such that every member's stem and first K stages are identical, bit for bit
    (parameters and batch-norm statistics); -1 when the members cannot share a prefix (a backbone
    that cannot be cut, different backbones, or different stems).

    Identity is checked, not assumed from a recipe: only then is running the prefix once exactly
    the members' own computation.
    """
    if len(members) < 2 or not all(can_cut(m) for m in members):
        return -1
    first = members[0].backbone.model
    if any(type(m.backbone.model) is not type(first) or len(m.backbone.model.blocks) != len(first.blocks)
           for m in members):
        return -1

    def same(stage: int) -> bool:
        ref = _prefix_tensors(members[0], stage)
        for m in members[1:]:
            other = _prefix_tensors(m, stage)
            if len(other) != len(ref) or any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(ref, other)):
                return False
        return True

    if not same(0):
        return -1
    best = 0
    for stage in range(1, len(first.blocks) + 1):
        if not same(stage):
            break
        best = stage
    return best
