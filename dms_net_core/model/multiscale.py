"""Multi-scale context modules that can replace OSIM (the paper's Table 3), keyed by name.

Every module maps [B,C,h,w] -> ``(features [B,C/2,h,w], attention [B,1,h,w])`` so they are
drop-in swaps for OSIM. Modules without a spatial attention return an all-ones map (the
overlay then shows "no attention", never a fake one).

Published designs, adapted only in the channel widths (input C, output C/2 like OSIM):
- ``aspp``: DeepLabV3 ASPP (Chen et al. 2018): 1x1 + three dilated 3x3 + image pooling,
  concat -> 1x1. Dilation rates (2, 4, 6) instead of (6, 12, 18): DeepLab's rates are for a
  ~33 px output-stride-16 map; ours are 7-14 px stride-32 maps where rate >= 7 would only read
  zero padding. Dropout of DeepLab's projection is left to the classifier head.
- ``spp``: YOLOv3-SPP / He et al. 2015 style: 1x1 to C/4, parallel max pools k=5,9,13
  (stride 1, same padding), concat -> 1x1.
- ``sppf``: YOLOv5 SPPF (Khanam & Hussain 2024): 1x1, three *sequential* k=5 max pools, concat
  -> 1x1, SiLU activations.
- ``simsppf``: YOLOv6 SimSPPF (Li et al. 2022): SPPF with ReLU instead of SiLU.
- ``rfb``: RFBNet BasicRFB (Liu, Huang & Wang 2018): three branches (1x1->3x3 d1; 1x1->3x3->3x3
  d3; 1x1->3x3->3x3->3x3 d5), concat -> 1x1, plus a 1x1 shortcut scaled by 0.1, then ReLU.
- ``none``: a 1x1 conv -> BN -> ReLU projection to C/2 (the paper's "w/o OSIM" ablation).
- ``osim``: the paper's module (``osim.py``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, NormLayer, init_weights, ones_attention
from .osim import OSIM


class _NoAttention(nn.Module):
    """Base for modules without spatial attention: forward returns (features, all-ones map)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x), ones_attention(x)


class Projection(_NoAttention):
    """1x1 conv -> BN -> ReLU to C/2: the "w/o OSIM" replacement."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        self.proj = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ASPP(_NoAttention):
    """Atrous Spatial Pyramid Pooling (DeepLabV3)."""

    rates: tuple[int, ...] = (2, 4, 6)

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)]
            + [ConvNormAct(in_channels, out_channels, 3, dilation=r, norm_layer=norm_layer) for r in self.rates]
        )
        self.image_pool = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)
        self.project = ConvNormAct(out_channels * (len(self.rates) + 2), out_channels, 1, norm_layer=norm_layer)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True))
        outs.append(pooled.expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class SPP(_NoAttention):
    """Spatial Pyramid Pooling, YOLOv3-SPP layout (parallel k=5,9,13 max pools)."""

    kernels: tuple[int, ...] = (5, 9, 13)
    activation: type[nn.Module] = nn.SiLU

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, activation=self.activation)
        self.cv2 = ConvNormAct(
            hidden * (len(self.kernels) + 1), out_channels, 1, norm_layer=norm_layer, activation=self.activation
        )
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernels]
        return self.cv2(torch.cat([x, *pooled], dim=1))


class SPPF(_NoAttention):
    """SPP-Fast (YOLOv5): three sequential k=5 max pools == SPP(5, 9, 13), cheaper."""

    kernel: int = 5
    activation: type[nn.Module] = nn.SiLU

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, activation=self.activation)
        self.cv2 = ConvNormAct(hidden * 4, out_channels, 1, norm_layer=norm_layer, activation=self.activation)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = F.max_pool2d(x, self.kernel, stride=1, padding=self.kernel // 2)
        y2 = F.max_pool2d(y1, self.kernel, stride=1, padding=self.kernel // 2)
        y3 = F.max_pool2d(y2, self.kernel, stride=1, padding=self.kernel // 2)
        return self.cv2(torch.cat([x, y1, y2, y3], dim=1))


class SimSPPF(SPPF):
    """SimSPPF (YOLOv6): SPPF with ReLU activations."""

    activation = nn.ReLU


class RFB(_NoAttention):
    """Receptive Field Block (RFBNet ``BasicRFB``)."""

    scale: float = 0.1

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        inter = max(in_channels // 8, 8)

        def cna(i: int, o: int, k: int = 1, d: int = 1, act: bool = True) -> nn.Module:
            return ConvNormAct(i, o, k, dilation=d, norm_layer=norm_layer, activation=nn.ReLU if act else None)

        self.branch0 = nn.Sequential(cna(in_channels, 2 * inter), cna(2 * inter, 2 * inter, 3, 1, act=False))
        self.branch1 = nn.Sequential(
            cna(in_channels, inter), cna(inter, 2 * inter, 3), cna(2 * inter, 2 * inter, 3, 3, act=False)
        )
        self.branch2 = nn.Sequential(
            cna(in_channels, inter),
            cna(inter, inter // 2 * 3, 3),
            cna(inter // 2 * 3, 2 * inter, 3),
            cna(2 * inter, 2 * inter, 3, 5, act=False),
        )
        self.linear = cna(6 * inter, out_channels, act=False)
        self.shortcut = cna(in_channels, out_channels, act=False)
        self.relu = nn.ReLU(inplace=True)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)
        return self.relu(self.linear(out) * self.scale + self.shortcut(x))


MULTISCALE_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "osim": OSIM,
    "aspp": ASPP,
    "spp": SPP,
    "sppf": SPPF,
    "simsppf": SimSPPF,
    "rfb": RFB,
    "none": Projection,
}


def create_multiscale(
    name: str, in_channels: int, out_channels: int | None = None, norm_layer: NormLayer | None = None
) -> nn.Module:
    """Build the multi-scale module ``name``: [B,C,h,w] -> (features [B,out,h,w], attention [B,1,h,w])."""
    if name not in MULTISCALE_FACTORIES:
        raise ValueError(f"unknown multiscale module {name!r}: choose one of {', '.join(MULTISCALE_FACTORIES)}")
    out_channels = out_channels or in_channels // 2
    return MULTISCALE_FACTORIES[name](in_channels, out_channels, norm_layer=norm_layer)
