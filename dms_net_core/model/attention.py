"""Bidirectional multi-head cross attention, shared by CASFM (eq. 11) and CAFM.

Both directions (left queries right, right queries left) run as ONE
``F.scaled_dot_product_attention`` call: the two eyes are stacked on the batch axis and the
keys/values are swapped by flipping a static size-2 axis. This keeps a single fused-attention
kernel on GPU, has no Python loop over the batch, stays autocast-safe and exports to ONNX with
a dynamic batch.

Projection weights W_Q, W_K, W_V and W_O are shared by both directions (the paper writes one
W^O in eq. 12), which makes the module eye-swap equivariant: attend(b, a) == reversed(attend(a, b)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BidirectionalCrossAttention(nn.Module):
    """(t_a, t_b) [B,N,E] -> (Z_a = MHA(q=t_a, kv=t_b) W_O, Z_b = MHA(q=t_b, kv=t_a) W_O)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)  # W^O

    def forward(self, t_a: torch.Tensor, t_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([t_a, t_b], dim=0)  # [2B, N, E]: eye a first, then eye b
        n, dim = tokens.shape[1], tokens.shape[2]
        qkv = self.qkv(tokens).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [2B, heads, N, head_dim]
        # Swap the eyes of keys/values: queries of eye a meet keys/values of eye b and vice versa.
        k = k.unflatten(0, (2, -1)).flip(0).flatten(0, 1)
        v = v.unflatten(0, (2, -1)).flip(0).flatten(0, 1)
        z = F.scaled_dot_product_attention(q, k, v)  # eq. (11)
        z = self.proj(z.transpose(1, 2).reshape(-1, n, dim))
        z_a, z_b = z.unflatten(0, (2, -1)).unbind(0)
        return z_a, z_b
