"""OmniPool Spatial Integrator Module (OSIM), the paper's eqs. (1)-(7).

    SPP_2x2(x) = interp(avgpool_(2,2)(x), size=HxW)        (1)   bilinear
    SPP_4x4(x) = interp(avgpool_(4,4)(x), size=HxW)        (2)
    GMP(x)     = maxpool_(1,1)(x) * 1                      (3)   broadcast to HxW
    GAP(x)     = avgpool_(1,1)(x) * 1                      (4)
    F_input    = Concat(x, GMP, GAP, SPP_2x2, SPP_4x4)     (5)   5C channels
    F_ccp      = ReLU(BN(Conv1x1(F_input)))                (6)   C/2 channels
    F_out      = F_ccp * sigma(W_s * F_ccp + b_s)          (7)

Interpretations where the paper is silent:
- "avgpool_(k,k)" is *adaptive* average pooling to a k x k grid (the text says "Adaptive Average
  Pooling with a scale parameter of 2/4"); we use an exportable implementation (``pooling.py``).
- Bilinear interpolation uses ``align_corners=False`` (PyTorch's default).
- W_s (eq. 7) is a 7x7 convolution C/2 -> 1 with bias (CBAM's spatial-attention kernel size);
  the paper only writes "*" (convolution).
- GMP/GAP broadcasts use ``expand`` (a view), so no extra memory is spent before the concat.

The module returns ``(F_out, attention)`` where attention = sigma(W_s * F_ccp + b_s) is [B,1,h,w]
in [0,1]: it is the overlay clinicians see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import NormLayer, conv1x1, init_weights
from .pooling import adaptive_avg_pool2d


class OSIM(nn.Module):
    """Multi-scale pooling + channel compression + spatial attention (eqs. 1-7)."""

    pool_grids: tuple[int, ...] = (2, 4)
    attention_kernel: int = 7

    def __init__(self, in_channels: int, out_channels: int | None = None, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        out_channels = out_channels or in_channels // 2
        branches = 3 + len(self.pool_grids)  # x, GMP, GAP, SPP_2x2, SPP_4x4 -> 5C
        self.compress = nn.Sequential(
            conv1x1(in_channels * branches, out_channels),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )
        self.spatial_attention = nn.Conv2d(
            out_channels, 1, kernel_size=self.attention_kernel, padding=self.attention_kernel // 2, bias=True
        )
        self.out_channels = out_channels
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        size = (int(height), int(width))
        gmp = torch.amax(x, dim=(2, 3), keepdim=True).expand_as(x)  # eq. (3)
        gap = torch.mean(x, dim=(2, 3), keepdim=True).expand_as(x)  # eq. (4)
        spp = [  # eqs. (1)-(2)
            F.interpolate(adaptive_avg_pool2d(x, grid), size=size, mode="bilinear", align_corners=False)
            for grid in self.pool_grids
        ]
        f_input = torch.cat([x, gmp, gap, *spp], dim=1)  # eq. (5)
        f_ccp = self.compress(f_input)  # eq. (6)
        attention = torch.sigmoid(self.spatial_attention(f_ccp))  # eq. (7)
        return f_ccp * attention, attention
