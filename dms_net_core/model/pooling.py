"""Exportable adaptive average pooling (OSIM eqs. 1-2).

``F.adaptive_avg_pool2d`` to 4x4 from a 7x7 or 14x14 map (ResNet at 224/448) cannot be exported
by the ONNX exporter because the output size does not divide the input size. Here we use
PyTorch's own bin formula -- bin i covers ``[floor(i*H/out), ceil((i+1)*H/out))`` -- with static
Python slicing on the (traced, static) spatial shape. Spatial sizes are fixed by the image
size, only the batch is dynamic, so the slices are constants in the exported graph.

The result keeps the input's memory format (channels_last in training and GPU inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, math.ceil((i + 1) * size / out)) for i in range(out)]


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """Same numbers as ``F.adaptive_avg_pool2d(x, output_size)``, but ONNX-exportable."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if height % out_h == 0 and width % out_w == 0:
        # Divisible: a plain strided average pool (exports as AveragePool).
        kh, kw = height // out_h, width // out_w
        return F.avg_pool2d(x, kernel_size=(kh, kw), stride=(kh, kw))
    rows = [x[..., h0:h1, :].mean(dim=-2, keepdim=True) for h0, h1 in _bins(height, out_h)]
    x_rows = torch.cat(rows, dim=-2)
    cols = [x_rows[..., w0:w1].mean(dim=-1, keepdim=True) for w0, w1 in _bins(width, out_w)]
    pooled = torch.cat(cols, dim=-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        # Keep channels_last: the cat above yields NCHW, and the bilinear upsampling that follows
        # in OSIM (fp32 under autocast) is ~50x slower on CUDA in NCHW than in NHWC.
        pooled = pooled.contiguous(memory_format=torch.channels_last)
    return pooled


def adaptive_avg_pool_matrix(height: int, width: int, grid: int,
                             device: torch.device | str | None = None) -> torch.Tensor:
    """[H*W, grid*grid]: ``x.flatten(2) @ P`` == ``adaptive_avg_pool2d(x, grid).flatten(2)``.

    Adaptive average pooling is linear in the pixels, so for a fixed map size it is one matrix
    product; built by pooling the identity basis, so the bins are exactly `adaptive_avg_pool2d`'s
    (PyTorch's formula, uneven bins included). ``grid=1`` gives the global average.
    """
    basis = torch.eye(height * width, device=device).reshape(height * width, 1, height, width)
    return adaptive_avg_pool2d(basis, grid).reshape(height * width, grid * grid)


def bilinear_upsample_matrix(grid: int, height: int, width: int,
                             device: torch.device | str | None = None) -> torch.Tensor:
    """[grid*grid, H*W]: ``p.flatten(2) @ U`` == ``F.interpolate(p, (H, W), mode="bilinear",
    align_corners=False).flatten(2)`` for a ``grid`` x ``grid`` map ``p`` (interpolating the
    identity basis gives exactly the weights PyTorch's kernel uses)."""
    basis = torch.eye(grid * grid, device=device).reshape(grid * grid, 1, grid, grid)
    upsampled = F.interpolate(basis, size=(height, width), mode="bilinear", align_corners=False)
    return upsampled.reshape(grid * grid, height * width)
