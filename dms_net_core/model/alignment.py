"""Dual-synergy cross-modal fusion: CAFM, the dual-path dense block, CCAM and CIAM.

The paper describes these modules only in prose (no equations), so this file states our reading:

- CAFM (Cross-Attention Fusion Module) aligns each eye's features to the other eye by
  bidirectional multi-head cross attention with a residual:
      A_l = X_l + MHA(q=LN(X_l), kv=LN(X_r)) W_O,   A_r = X_r + MHA(q=LN(X_r), kv=LN(X_l)) W_O.
  The attention "computes spatial similarity of feature maps across key anatomical regions"
  (the paper's words), i.e. it reads the other eye at the anatomically matching place (optic
  disc to optic disc, despite the left/right mirror and camera offsets). Weights are shared by
  both directions, so CAFM is eye-swap equivariant: CAFM(X_r, X_l) == (A_r, A_l).
- Before CAFM both eyes are projected by one shared 1x1 conv -> BN -> ReLU from C/2 to E
  channels (so that the w/o-CAFM ablation keeps identical shapes and parameters elsewhere).
- Dual-path densely connected block (DPN, Chen et al. 2017): every layer (BN-ReLU-1x1-BN-ReLU-3x3)
  emits E + growth channels; the first E are *added* to a residual path, the last `growth` are
  *concatenated* to a dense path; after `layers` layers the [residual, dense] concat goes through a
  BN-ReLU-1x1 transition back to E channels.
- CCAM (contrastive): D = A_l - A_r (asymmetric lesions), then the dual-path block. Swapping the
  eyes flips the sign of D, the block itself is not sign-symmetric, so laterality is kept.
- CIAM (integrative): S = A_l + A_r (``sum``) or A_l * A_r (``product``) (symmetric lesions;
  invariant to swapping the eyes), then the dual-path block plus a residual: out = block(S) + S.
- ``use_cafm=False`` (Table 2 "w/o CAFM"): A_l, A_r are the projected, un-aligned features.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import BidirectionalCrossAttention
from .layers import NormLayer, conv1x1, conv3x3, flatten_tokens, init_weights, unflatten_tokens


class CAFM(nn.Module):
    """Cross-attention alignment of the two eyes' feature maps (eye-swap equivariant)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.cross_attention = BidirectionalCrossAttention(dim, num_heads)

    def forward(self, x_left: torch.Tensor, x_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_left, a_right = self.align_stacked(torch.cat([x_left, x_right], dim=0)).unflatten(0, (2, -1)).unbind(0)
        return a_left, a_right

    def align_stacked(self, both: torch.Tensor) -> torch.Tensor:
        """(X_l; X_r) [2B,E,h,w] stacked along the batch -> (A_l; A_r) [2B,E,h,w].

        The stacked form is what `_AlignedPair` has anyway (one projection conv for both eyes),
        and it lets one LayerNorm and one residual add serve both eyes (issue 15: 6 ops where
        the per-eye form took 10; the same numbers)."""
        height, width = int(both.shape[-2]), int(both.shape[-1])
        tokens = flatten_tokens(both)  # [2B, N, E]
        cycled = torch.cat([tokens, tokens.unflatten(0, (2, -1))[0]], dim=0)  # (l, r, l), see attention.py
        z = self.cross_attention.attend_cycled(self.norm(cycled))
        return both + unflatten_tokens(z, height, width)


class DualPathLayer(nn.Module):
    """Pre-activation bottleneck emitting `residual_channels + growth` channels (DPN layer)."""

    bottleneck_factor: int = 4

    def __init__(self, in_channels: int, residual_channels: int, growth: int, norm_layer: NormLayer) -> None:
        super().__init__()
        width = self.bottleneck_factor * growth
        self.body = nn.Sequential(
            norm_layer(in_channels),
            nn.ReLU(inplace=True),
            conv1x1(in_channels, width),
            norm_layer(width),
            nn.ReLU(inplace=True),
            conv3x3(width, residual_channels + growth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DualPathDenseBlock(nn.Module):
    """DPN-style block: a residual path (sum) and a densely connected path (concat), E -> E channels."""

    def __init__(self, channels: int, growth: int, layers: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.channels = channels
        self.layers = nn.ModuleList(
            [DualPathLayer(channels + i * growth, channels, growth, norm_layer) for i in range(layers)]
        )
        total = channels + layers * growth
        self.transition = nn.Sequential(norm_layer(total), nn.ReLU(inplace=True), conv1x1(total, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, dense = x, []
        features = x
        for layer in self.layers:
            out = layer(features)
            residual = residual + out[:, : self.channels]
            dense.append(out[:, self.channels :])
            features = torch.cat([residual, *dense], dim=1)
        return self.transition(features)


class _AlignedPair(nn.Module):
    """What CCAM and CIAM share: a 1x1 projection of both eyes to E channels, CAFM (or identity
    when disabled) and the dual-path block their forward applies to the combined eyes."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_heads: int,
        growth: int,
        layers: int,
        use_cafm: bool = True,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.project = nn.Sequential(conv1x1(in_channels, dim), norm_layer(dim), nn.ReLU(inplace=True))
        self.cafm = CAFM(dim, num_heads) if use_cafm else None
        self.block = DualPathDenseBlock(dim, growth, layers, norm_layer)
        self.out_channels = dim
        init_weights(self)

    def align(self, x_left: torch.Tensor, x_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.project(torch.cat([x_left, x_right], dim=0))  # one conv for both eyes
        if self.cafm is not None:
            both = self.cafm.align_stacked(both)
        a_left, a_right = both.unflatten(0, (2, -1)).unbind(0)
        return a_left, a_right


class CCAM(_AlignedPair):
    """Cross-modal Contrastive Alignment: dual-path block on A_l - A_r -> [B,E,h,w]."""

    def forward(self, x_left: torch.Tensor, x_right: torch.Tensor) -> torch.Tensor:
        a_left, a_right = self.align(x_left, x_right)
        return self.block(a_left - a_right)


class CIAM(_AlignedPair):
    """Cross-modal Integrative Alignment: dual-path block + residual on A_l (+|*) A_r -> [B,E,h,w]."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_heads: int,
        growth: int,
        layers: int,
        use_cafm: bool = True,
        aggregation: str = "sum",
        norm_layer: NormLayer | None = None,
    ) -> None:
        if aggregation not in ("sum", "product"):
            raise ValueError(f"ciam_aggregation must be 'sum' or 'product', got {aggregation!r}")
        super().__init__(in_channels, dim, num_heads, growth, layers, use_cafm, norm_layer)
        self.aggregation = aggregation

    def forward(self, x_left: torch.Tensor, x_right: torch.Tensor) -> torch.Tensor:
        a_left, a_right = self.align(x_left, x_right)
        aggregate = a_left + a_right if self.aggregation == "sum" else a_left * a_right
        return self.block(aggregate) + aggregate
