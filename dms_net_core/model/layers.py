"""Small building blocks shared by the DMS-Net modules (torchvision ``resnet.py`` style).

Everything here is plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` so the graph stays autocast-safe,
channels_last friendly and ONNX-exportable.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution: the channel projection used throughout the paper (eqs. 6, 8, 10, 13)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=bias)


def conv3x3(in_planes: int, out_planes: int, dilation: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with 'same' padding (also for dilated branches)."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, padding=dilation, dilation=dilation, groups=groups, bias=bias
    )


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation, the unit every multi-scale module is built from."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        norm_layer = norm_layer or nn.BatchNorm2d
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_planes, out_planes, kernel_size, padding=padding, dilation=dilation, bias=False),
            norm_layer(out_planes),
        ]
        if activation is not None:
            layers.append(activation(inplace=True) if activation in (nn.ReLU, nn.SiLU) else activation())
        super().__init__(*layers)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs, unit/zero norms, small linear weights (torchvision ResNet's recipe).

    Applied only to the modules DMS-Net adds on top of the backbone, so pretrained backbone
    weights are never touched.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def ones_attention(x: torch.Tensor) -> torch.Tensor:
    """An all-ones [B,1,h,w] map: the 'attention' of a module that has none.

    Computed as ``x ** 0`` rather than ``torch.ones_like(x)``: the TorchScript ONNX exporter
    constant-folds shape-only ops on the per-eye split of the batch and would bake the traced
    batch size into the output; a data-dependent Pow keeps the batch dynamic (and x ** 0 == 1
    also for inf/NaN, per IEEE 754).
    """
    return x[:, :1].detach().pow(0)


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] -> [B,h*w,C] token sequence (a view when x is channels_last)."""
    return x.flatten(2).transpose(1, 2)


def unflatten_tokens(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B,h*w,C] -> [B,C,h,w]; a transpose view, so no copy is made here."""
    return tokens.transpose(1, 2).unflatten(2, (height, width))
