"""Bidirectional multi-head cross attention, shared by CASFM (eq. 11) and CAFM.

Both directions (left queries right, right queries left) run as ONE
``F.scaled_dot_product_attention`` call on the two eyes stacked along the batch. The eye swap of
the keys/values costs no copy (issue 15): the tokens come in *eye-cycled* order
``(a, b, a)`` [3B, N, E], one projection computes q/k/v for all 3B rows, and the queries are
rows [0, 2B) = (a, b) while the keys/values are rows [B, 3B) = (b, a), both views. That is one
concat (which the caller needs anyway to normalise both eyes with one LayerNorm) instead of a
concat plus two ``flip`` copies and two LayerNorms; the price, a third more rows in the qkv
projection, is negligible (N <= 196 tokens). This keeps a single fused-attention kernel on GPU,
has no Python loop over the batch, stays autocast-safe and exports to ONNX with a dynamic batch.

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
        z_a, z_b = self.attend_cycled(eye_cycled(t_a, t_b)).unflatten(0, (2, -1)).unbind(0)
        return z_a, z_b

    def attend_cycled(self, cycled: torch.Tensor) -> torch.Tensor:
        """Eye-cycled tokens (a, b, a) [3B, N, E] -> (Z_a; Z_b) [2B, N, E], Z_a = MHA(q=a, kv=b) W_O."""
        n, dim = cycled.shape[1], cycled.shape[2]
        qkv = self.qkv(cycled).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        # [q|k|v, eye slot (a, b, a), B, heads, N, head_dim]; slicing the static slot axis (never
        # the batch, whose size the ONNX tracer would bake in) keeps every slice a view
        qkv = qkv.unflatten(1, (3, -1))
        q = qkv[0, :2].flatten(0, 1)  # [2B, heads, N, head_dim]: queries of (a, b)
        k, v = qkv[1, 1:].flatten(0, 1), qkv[2, 1:].flatten(0, 1)  # keys/values of (b, a): the other eye's
        z = F.scaled_dot_product_attention(q, k, v)  # eq. (11)
        return self.proj(z.transpose(1, 2).reshape(-1, n, dim))


def eye_cycled(t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
    """(a, b) [B, N, E] each -> (a, b, a) [3B, N, E], what `attend_cycled` takes (one concat)."""
    return torch.cat([t_a, t_b, t_a], dim=0)
