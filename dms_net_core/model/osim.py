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

How eq. (6) is computed (issue 15; the same function of the same weights, exact up to fp32
rounding): the 1x1 convolution of the 5C-channel concat is never built. A 1x1 conv of a concat
is the sum of 1x1 convs of its parts (W = [W_x | W_gmp | W_gap | W_2x2 | W_4x4]), and a 1x1 conv
commutes with average pooling and with bilinear upsampling (all three are linear, the conv over
channels, the others over pixels). So `MultiScaleProjection` convolves x at full resolution with
W_x only, convolves the pooled descriptors at 1x1 / 2x2 / 4x4 with their slices of W, and adds
them upsampled/broadcast. For ResNet @ 448 (C = 2048, 14x14) OSIM then costs 1.2 instead of
4.1 GFLOPs an eye, writes no 5C x 14 x 14 concat, and runs 12 ops instead of 22 in eager mode
(the pools and upsamplings are products with constant operators, `pooling.py`; under
torch.compile, reductions and interpolation that Inductor fuses). Parameter names and shapes are
unchanged (``compress.0.weight`` is still the [C/2, 5C, 1, 1] kernel), so every checkpoint loads
as before; `reference_heads` keeps the concat form for the equivalence tests and before/after
timing.

The module returns ``(F_out, attention)`` where attention = sigma(W_s * F_ccp + b_s) is [B,1,h,w]
in [0,1]: it is the overlay clinicians see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import NormLayer, init_weights
from .pooling import adaptive_avg_pool2d, adaptive_avg_pool_matrix, bilinear_upsample_matrix


def multiscale_concat(x: torch.Tensor, pool_grids: tuple[int, ...]) -> torch.Tensor:
    """F_input of eq. (5): Concat(x, GMP, GAP, SPP_2x2, SPP_4x4), 5C channels at full resolution."""
    height, width = x.shape[-2:]
    size = (int(height), int(width))
    gmp = torch.amax(x, dim=(2, 3), keepdim=True).expand_as(x)  # eq. (3)
    gap = torch.mean(x, dim=(2, 3), keepdim=True).expand_as(x)  # eq. (4)
    spp = [  # eqs. (1)-(2)
        F.interpolate(adaptive_avg_pool2d(x, grid), size=size, mode="bilinear", align_corners=False)
        for grid in pool_grids
    ]
    return torch.cat([x, gmp, gap, *spp], dim=1)


class MultiScaleProjection(nn.Conv2d):
    """Eq. (6)'s 1x1 convolution of eq. (5)'s concat, computed from x without building the concat.

    A plain [out, 5C, 1, 1] ``nn.Conv2d`` as far as parameters, checkpoints and BatchNorm folding
    are concerned (a folded bias is honoured), whose forward takes the C-channel map x:

        conv(F_input) = W_x * x  +  Up(W_ctx * [GMP | GAP | SPP_2x2 | SPP_4x4 descriptors])

    The descriptors are one [B, 2 + 4 + 16, C] matrix (amax, then one product with the pooling
    operator); a 0/1 branch mask places each row under its own weight slice, so W_ctx is applied
    in one product; one (broadcast) product with the upsampling operator (rows of ones for the
    broadcasts, bilinear weights for the grids) adds the context to W_x * x. On a channels_last
    map (the GPU layout) this runs on tokens [B, HW, C], a view, and returns NHWC; on an NCHW map
    (CPU training and serving, the ONNX export) the transposed products return NCHW, so the
    layout of everything downstream is what it was. The operators depend on the map size only
    and are cached per size as non-persistent buffers (moved by ``.to()``, absent from the
    state_dict).
    """

    def __init__(self, in_channels: int, out_channels: int, pool_grids: tuple[int, ...], bias: bool = False) -> None:
        super().__init__(in_channels * (3 + len(pool_grids)), out_channels, kernel_size=1, bias=bias)
        self.branch_channels = in_channels
        self.pool_grids = tuple(pool_grids)
        # descriptor row j belongs to branch branch_of_row[j]: GMP, GAP, then one branch per grid
        branch_of_row = [0, 1] + [2 + i for i, grid in enumerate(self.pool_grids) for _ in range(grid * grid)]
        mask = F.one_hot(torch.tensor(branch_of_row), 2 + len(self.pool_grids)).float()
        self.register_buffer("branch_mask", mask.unsqueeze(-1), persistent=False)  # [rows, branches, 1]

    def _context_operators(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool [rows - 1, HW], upsample [HW, rows]) for x's map size, cached per size."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        name = f"{height}x{width}"
        pool, upsample = getattr(self, f"pool_{name}", None), getattr(self, f"upsample_{name}", None)
        if pool is not None and upsample is not None:
            return pool, upsample
        if torch.compiler.is_compiling():  # a compiled graph must not mutate the module: build inline
            return self._build_operators(height, width, x)
        # Not under inference_mode: a buffer created there could never take part in autograd
        # (training after an evaluation) nor in the ONNX exporter's trace.
        with torch.inference_mode(False):
            pool, upsample = self._build_operators(height, width, x)
        self.register_buffer(f"pool_{name}", pool, persistent=False)
        self.register_buffer(f"upsample_{name}", upsample, persistent=False)
        return pool, upsample

    def _build_operators(self, height: int, width: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Built on x's device (a compiled graph that builds them inline then has no host tensors)."""
        grids = (1, *self.pool_grids)  # GAP is the 1x1 grid
        pool = torch.cat([adaptive_avg_pool_matrix(height, width, g, x.device) for g in grids], dim=1).t()
        ones = torch.ones(1, height * width, device=x.device)  # GMP's broadcast (GAP's is its grid-1 row)
        upsample = torch.cat([ones, *[bilinear_upsample_matrix(g, height, width, x.device) for g in grids]], dim=0).t()
        # at least fp32 (a map first seen under autocast is half precision: 1/49 must not be kept rounded)
        dtype = torch.promote_types(x.dtype, torch.float32)
        return pool.to(dtype).contiguous(), upsample.to(dtype).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if torch.compiler.is_compiling():
            return self._fusable_forward(x)
        channels, height, width = x.shape[1:]  # channels != branch_channels fails in the first product
        # .to(x.dtype) is free when the model and its buffers share x's dtype (serving); under
        # autocast x is half precision while the buffers stay fp32, and matmul is not autocast
        pool, upsample = (t.to(x.dtype) for t in self._context_operators(x))
        mask = self.branch_mask.to(x.dtype)
        weight = self.weight.flatten(1)  # [out, 5C]; the slices below are views
        w_local, w_context = weight[:, :channels], weight[:, channels:]
        gmp = torch.amax(x, dim=(2, 3))  # [B, C]
        if x.stride(1) == 1 and channels > 1:
            # channels_last (the GPU layout): tokens [B, HW, C] are a view, the result stays NHWC
            tokens = x.flatten(2).transpose(1, 2)
            descriptors = torch.cat([gmp.unsqueeze(1), pool @ tokens], dim=1)  # [B, rows, C]
            placed = (descriptors.unsqueeze(2) * mask).flatten(2)  # [B, rows, branches * C]
            context = F.linear(placed, w_context)  # [B, rows, out]: each branch's 1x1 conv at its own grid
            local = F.linear(tokens, w_local, self.bias)  # [B, HW, out]: W_x * x (+ bias)
            out = local + upsample @ context  # + Up(context); no explicit batch, so ONNX stays batch-dynamic
            return out.transpose(1, 2).unflatten(2, (height, width))
        # NCHW (the CPU and ONNX layout): the same products transposed, so the result stays NCHW
        maps = x.flatten(2)  # [B, C, HW]
        descriptors = torch.cat([gmp.unsqueeze(2), maps @ pool.t()], dim=2)  # [B, C, rows]
        placed = (descriptors.unsqueeze(1) * mask.permute(1, 2, 0)).flatten(1, 2)  # [B, branches * C, rows]
        out = w_local @ maps + (w_context @ placed) @ upsample.t()  # [B, out, HW]
        if self.bias is not None:
            out = out + self.bias.unsqueeze(-1)
        return out.unflatten(2, (height, width))

    def _fusable_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same sum for torch.compile: pools as reductions and the upsampling as interpolation,
        which Inductor fuses into a few kernels of its own (each product with a constant operator
        would stay a separate library call); only the two weight products remain library calls."""
        channels, height, width = x.shape[1:]
        weight = self.weight.flatten(1)
        pooled = [F.adaptive_avg_pool2d(x, grid).flatten(2) for grid in (1, *self.pool_grids)]  # GAP, SPP grids
        descriptors = torch.cat([torch.amax(x, dim=(2, 3)).unsqueeze(-1), *pooled], dim=2)  # [B, C, rows]
        placed = (descriptors.unsqueeze(1) * self.branch_mask.to(x.dtype).permute(1, 2, 0)).flatten(1, 2)
        context = weight[:, channels:] @ placed  # [B, out, rows]
        up = (context[..., 0] + context[..., 1]).unsqueeze(-1).unsqueeze(-1)  # GMP + GAP, broadcast
        start = 2
        for grid in self.pool_grids:
            cells = context[..., start : start + grid * grid].unflatten(2, (grid, grid))
            up = up + F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)
            start += grid * grid
        if x.stride(1) == 1 and channels > 1:  # channels_last: W_x * x on the token view, NHWC out
            local = (F.linear(x.flatten(2).transpose(1, 2), weight[:, :channels], self.bias)
                     .transpose(1, 2).unflatten(2, (height, width)))
        else:
            local = (weight[:, :channels] @ x.flatten(2)).unflatten(2, (height, width))
            if self.bias is not None:
                local = local + self.bias.view(-1, 1, 1)
        return local + up


class OSIM(nn.Module):
    """Multi-scale pooling + channel compression + spatial attention (eqs. 1-7)."""

    pool_grids: tuple[int, ...] = (2, 4)
    attention_kernel: int = 7

    def __init__(self, in_channels: int, out_channels: int | None = None, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        out_channels = out_channels or in_channels // 2
        self.compress = nn.Sequential(
            MultiScaleProjection(in_channels, out_channels, self.pool_grids),  # 1x1 conv, 5C -> C/2
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )
        self.spatial_attention = nn.Conv2d(
            out_channels, 1, kernel_size=self.attention_kernel, padding=self.attention_kernel // 2, bias=True
        )
        self.out_channels = out_channels
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_ccp = self.compress(x)  # eqs. (1)-(6), see MultiScaleProjection
        attention = torch.sigmoid(self.spatial_attention(f_ccp))  # eq. (7)
        return f_ccp * attention, attention
