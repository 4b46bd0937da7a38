"""Freeze a pretrained backbone's first stages for training (``dms-net-train --frozen-stages N``).

Why: the stem and the first stages of an ImageNet backbone are generic edge/colour filters
with few parameters (EfficientNet-Lite0: stem + stages 0-1 hold 15 k of 3.4 M) but run at the
highest resolution, so their backward pass is a large share of a training step. Freezing them
(weights and BatchNorm statistics, as detection codebases' ``frozen_stages`` + ``norm_eval``
do) roughly doubles training speed on a CPU (Lite0 at 256 px, 2 cores: 8.1 -> 16.9 pairs/s
for N = 2) and changes neither the architecture nor the exported model.
"""

from __future__ import annotations

from torch import nn


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone as an ordered list: the stem, then its stages."""
    inner = getattr(backbone, "model", None)  # EfficientNetLite wrapper around timm
    if inner is not None and hasattr(inner, "blocks"):
        return [nn.ModuleList([inner.conv_stem, inner.bn1]), *inner.blocks]
    body = getattr(backbone, "body", None)  # torchvision ResNet/ResNeXt without avgpool/fc
    if isinstance(body, nn.Sequential):
        children = list(body.children())
        return [nn.ModuleList(children[:4]), *children[4:]]  # conv1 bn1 relu maxpool | layer1..4
    if isinstance(backbone, nn.Sequential):  # the tiny test backbone
        return list(backbone.children())
    raise ValueError(f"--frozen-stages is not supported for {type(backbone).__name__}: use 0")


def freeze_backbone_stages(model: nn.Module, stages: int) -> list[nn.Module]:
    """Stop gradients through the stem and the first ``stages`` stages after it, and return
    those modules; call `keep_frozen_in_eval` after every ``model.train()`` so their
    BatchNorm keeps its pretrained statistics."""
    if stages <= 0:
        return []
    units = backbone_stages(model.backbone)
    if stages + 1 >= len(units):
        raise ValueError(f"--frozen-stages {stages} would freeze the whole backbone "
                         f"(stem + {len(units) - 1} stages): choose fewer")
    frozen = units[: stages + 1]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def keep_frozen_in_eval(frozen: list[nn.Module]) -> None:
    """Frozen stages use their running BatchNorm statistics (no update from training batches)."""
    for module in frozen:
        module.eval()
