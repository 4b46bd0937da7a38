"""The control model the issue requires DMS-Net to beat: a plain siamese binocular classifier.

    f_l, f_r = GAP(backbone(cat[left, right]))            (one shared backbone, one run)
    logits   = Linear(Dropout([f_l, f_r, |f_l - f_r|]))

No OSIM/CASFM/CCAM/CIAM; same forward signature as ``DMSNet`` (attention maps are all ones at the
backbone's feature resolution) so training, export and the runtime treat both identically.
With ``per_eye_heads`` it also returns per-eye logits from one shared linear layer on f_l, f_r,
and ``forward(left, right, with_cams=True)`` appends that layer's class activation maps per eye
(`dms_net_core.model.cam`: the head applied at every position of the eye's feature map).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import create_backbone
from .cam import class_activation_maps
from .config import DMSNetConfig
from .dms_net import calibrated, linear_head, logit_offsets_buffer, per_eye_logits, run_siamese
from .layers import ones_attention


class PlainBinocularNet(nn.Module):
    """Shared backbone + [f_l, f_r, |f_l - f_r|] linear head."""

    def __init__(self, cfg: DMSNetConfig) -> None:
        super().__init__()
        if cfg.architecture != "plain_binocular":
            raise ValueError(
                "PlainBinocularNet needs architecture='plain_binocular', "
                f"got {cfg.architecture!r}: use build_model(cfg)"
            )
        self.config = cfg
        self.backbone, channels = create_backbone(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = linear_head(3 * channels, cfg.num_classes)
        self.eye_classifier = linear_head(channels, cfg.num_classes) if cfg.per_eye_heads else None
        logit_offsets_buffer(self, cfg)
        #: the per-eye head is linear on GAP features, so its CAMs are exact (`dms_net_core.model.cam`)
        self.provides_cams = self.eye_classifier is not None

    def forward(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool = False) -> tuple[torch.Tensor, ...]:
        map_left, map_right = run_siamese(self.backbone, left, right)
        f_left, f_right = map_left.mean(dim=(2, 3)), map_right.mean(dim=(2, 3))
        logits = self.classifier(self.dropout(torch.cat([f_left, f_right, (f_left - f_right).abs()], dim=1)))
        logits = calibrated(logits, self.logit_offsets)
        outputs = (logits, ones_attention(map_left), ones_attention(map_right))
        if self.eye_classifier is None:
            if with_cams:
                raise ValueError("with_cams=True needs per-eye heads: build the model with per_eye_heads=True")
            return outputs
        outputs = (*outputs, *per_eye_logits(self.eye_classifier, self.dropout, f_left, f_right))
        if not with_cams:
            return outputs
        return (*outputs, class_activation_maps(self.eye_classifier, map_left),
                class_activation_maps(self.eye_classifier, map_right))
