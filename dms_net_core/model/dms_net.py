"""DMS-Net (dual-modal multi-scale siamese network), assembled as in the paper's Figure 2.

    left, right --cat(batch)--> shared backbone --split--> f_l, f_r           (siamese, one graph)
    f_l -> multiscale_left  (OSIM by default) -> F_l, attention_l              (eqs. 1-7)
    f_r -> multiscale_right (OSIM by default) -> F_r, attention_r
    (F_l, F_r) -> CASFM -> F_fuse                                              (eqs. 8-13)
    (F_l, F_r) -> CCAM  -> contrastive map;  (F_l, F_r) -> CIAM -> integrative map
    head: concat(GAP(F_fuse), GAP(CCAM), GAP(CIAM)) -> dropout -> linear -> logits

Switches (``DMSNetConfig``), so the paper's Tables 1-3 can be rerun by config:
- ``multiscale`` picks OSIM or a Table 3 alternative for both eyes; ``use_osim_left/right=False``
  replaces that eye's module by the 1x1 "none" projection (Table 2 "w/o OSIM(Left/Right)"). The
  two eyes therefore have separate multi-scale modules (also with identical settings: separate
  weights per eye, as the per-eye ablation implies).
- ``use_casfm=False``: F_fuse = ReLU(BN(Conv1x1(Concat(F_l, F_r)))) at full resolution.
- ``use_ccam=False`` / ``use_ciam=False``: that vector is left out of the head.
- ``use_cafm=False``: CCAM/CIAM see the projected, un-aligned features.
- ``neck_channels`` (beyond the paper): a 1x1 conv-BN-ReLU after the shared backbone, so the heads
  work on fewer channels (see `DMSNetConfig.neck_channels` for why).

``forward(left, right)`` takes float32 [B,3,S,S] tensors (normalised per ``PreprocessConfig``) and
returns ``(logits [B,num_classes], attention_left [B,1,h,w], attention_right [B,1,h,w])``;
the attention maps are all ones for an eye without OSIM. With ``per_eye_heads`` (beyond the
paper) it also returns ``left_logits, right_logits`` [B,num_classes]: one linear classifier,
shared by both eyes, on each eye's pooled multi-scale features (F_l, F_r), trained on the
per-eye keyword labels (`dms_net_core.data.eye_labels`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .alignment import CCAM, CIAM
from .backbones import create_backbone
from .casfm import CASFM, ConcatFusion
from .config import DMSNetConfig
from .layers import ConvNormAct, init_weights
from .multiscale import create_multiscale


def _multiscale_name(cfg: DMSNetConfig, use_osim_for_eye: bool) -> str:
    if cfg.multiscale == "osim" and not use_osim_for_eye:
        return "none"
    return cfg.multiscale


def linear_head(in_features: int, num_classes: int) -> nn.Linear:
    """A classifier layer initialised small (trunc-normal 0.02, zero bias) like ViT/timm heads."""
    head = nn.Linear(in_features, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


def logit_offsets_buffer(module: nn.Module, cfg: DMSNetConfig) -> None:
    """Register ``cfg.logit_offsets`` as a non-persistent buffer (not a weight: state dicts stay
    as they were) that `calibrated` adds to the patient logits; None when uncalibrated."""
    offsets = torch.tensor(cfg.logit_offsets, dtype=torch.float32) if cfg.logit_offsets is not None else None
    module.register_buffer("logit_offsets", offsets, persistent=False)


def calibrated(logits: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    return logits if offsets is None else logits + offsets.to(logits.dtype)


def per_eye_logits(classifier: nn.Module, dropout: nn.Module, v_left: torch.Tensor,
                   v_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-eye head: ONE classifier (siamese, like the backbone) on both eyes' pooled vectors."""
    both = classifier(dropout(torch.cat([v_left, v_right], dim=0)))
    eye_left, eye_right = both.unflatten(0, (2, -1)).unbind(0)
    return eye_left, eye_right


def run_siamese(backbone: Callable[[torch.Tensor], torch.Tensor], left: torch.Tensor,
                right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ONE backbone once on both eyes (batch concat) and split the features back per eye."""
    features = backbone(torch.cat([left, right], dim=0))
    f_left, f_right = features.unflatten(0, (2, -1)).unbind(0)
    return f_left, f_right


class DMSNet(nn.Module):
    """The paper's model; see the module docstring for the data flow and switches."""

    def __init__(self, cfg: DMSNetConfig) -> None:
        super().__init__()
        if cfg.architecture != "dms_net":
            raise ValueError(f"DMSNet needs architecture='dms_net', got {cfg.architecture!r}: use build_model(cfg)")
        self.config = cfg
        self.backbone, channels = create_backbone(cfg)
        # optional neck (beyond the paper): fewer channels into the randomly initialised heads
        self.neck = ConvNormAct(channels, cfg.neck_channels) if cfg.neck_channels else None
        if self.neck is not None:
            init_weights(self.neck)
            channels = cfg.neck_channels
        mid = channels // 2  # C/2 (eq. 6)
        dim = cfg.embed_dim
        self.multiscale_left = create_multiscale(_multiscale_name(cfg, cfg.use_osim_left), channels, mid)
        self.multiscale_right = create_multiscale(_multiscale_name(cfg, cfg.use_osim_right), channels, mid)
        self.fusion = CASFM(mid, dim, cfg.num_heads) if cfg.use_casfm else ConcatFusion(mid, dim)
        self.ccam = (
            CCAM(mid, dim, cfg.num_heads, cfg.dense_growth, cfg.dense_layers, use_cafm=cfg.use_cafm)
            if cfg.use_ccam
            else None
        )
        self.ciam = (
            CIAM(
                mid,
                dim,
                cfg.num_heads,
                cfg.dense_growth,
                cfg.dense_layers,
                use_cafm=cfg.use_cafm,
                aggregation=cfg.ciam_aggregation,
            )
            if cfg.use_ciam
            else None
        )
        head_in = dim * (1 + int(cfg.use_ccam) + int(cfg.use_ciam))
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = linear_head(head_in, cfg.num_classes)
        self.eye_classifier = linear_head(mid, cfg.num_classes) if cfg.per_eye_heads else None
        logit_offsets_buffer(self, cfg)

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """The shared per-eye feature extractor: backbone, then the neck when there is one."""
        features = self.backbone(images)
        return features if self.neck is None else self.neck(features)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f_left, f_right = run_siamese(self.trunk, left, right)
        f_left, attention_left = self.multiscale_left(f_left)
        f_right, attention_right = self.multiscale_right(f_right)
        vectors = [self.fusion(f_left, f_right).mean(dim=(2, 3))]
        if self.ccam is not None:
            vectors.append(self.ccam(f_left, f_right).mean(dim=(2, 3)))
        if self.ciam is not None:
            vectors.append(self.ciam(f_left, f_right).mean(dim=(2, 3)))
        logits = calibrated(self.classifier(self.dropout(torch.cat(vectors, dim=1))), self.logit_offsets)
        if self.eye_classifier is None:
            return logits, attention_left, attention_right
        return (logits, attention_left, attention_right,
                *per_eye_logits(self.eye_classifier, self.dropout, f_left.mean(dim=(2, 3)), f_right.mean(dim=(2, 3))))
