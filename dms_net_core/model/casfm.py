"""Calibrated Analogous Semantic Fusion Module (CASFM), the paper's eqs. (8)-(13).

    F^avg = avgpool_k(Conv1x1(F)),  F^max = maxpool_k(Conv1x1(F))               (8)  k = 2
    F     = lambda * F^max + (1 - lambda) * F^avg,   lambda in [0,1]             (9)
    T     = Flatten(Conv1x1(F)) + Interp(P0, (H,W)) W_p                          (10)
    Z_l   = MHA(q=T_l, kv=T_r),  Z_r = MHA(q=T_r, kv=T_l)                         (11)
    T'    = alpha * Z W^O + beta * T,   alpha, beta in [0,1]                      (12)
    F_fuse = Conv1x1(Concat(T'_l, T'_r))                                          (13)

Interpretations (the paper is ambiguous here):
- Eq. (8)'s 1/k^2 factor: ``avgpool`` already divides the k x k window sum by k^2, so we read
  "1/k^2 avgpool" as the definition of average pooling, not a second division. Applying 1/k^2
  to the max branch too would only scale both branches by the constant 1/4 (absorbed by the
  next 1x1 conv), but it would make the lambda mix of eq. (9) compare max and average at
  different scales, so we apply no extra factor. Pools use floor mode (7x7 -> 3x3 at 224 px).
- The 1x1 convs of eqs. (8) and (10), lambda, P0, W_p, alpha and beta are modality-specific
  (one set per eye: the "modality-adaptive"/"modality-specific" wording); the attention
  projections are shared by both directions (one W^O in eq. 12), see ``attention.py``.
- Eq. (10)'s P0 is C_emb x 1 x 1, and interpolating a 1x1 map gives a spatially constant
  embedding, i.e. no positional information. We use a learned ``pos_grid`` x ``pos_grid`` grid P0
  (4x4), bilinearly interpolated to the token grid and projected by W_p (a 1x1 conv, applied
  before the interpolation: both are linear, so they commute and this is cheaper).
- Eq. (11)'s subscripts: we add to each eye's tokens the attention in which *that eye* queries the
  other (T'_l = alpha_l Z(q=T_l, kv=T_r) W^O + beta_l T_l): the only choice in which the residual
  sum adds features of the same spatial position. Tokens are LayerNorm-ed before attention
  (standard pre-norm; the paper is silent), the residual uses the un-normalised T.
- alpha, beta, lambda = sigmoid(learned scalar), initialised at 0.5.

Issue 15 (fewer kernels at batch 1, the same numbers up to fp32 rounding): eq. (9) is one
``addcmul`` (f_avg + lambda (f_max - f_avg)), both eyes share one LayerNorm call and one
eye-cycled attention call (`attention.py`), and eq. (12) runs on the two eyes stacked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BidirectionalCrossAttention, eye_cycled
from .layers import conv1x1, flatten_tokens, init_weights, unflatten_tokens


class EyeTokenizer(nn.Module):
    """One eye's path through eqs. (8)-(10): [B,C,H,W] -> tokens [B,(H/2)(W/2),E]."""

    pool_kernel: int = 2
    pos_grid: int = 4

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.reduce = conv1x1(in_channels, embed_dim, bias=True)  # eq. (8) conv
        self.mix_logit = nn.Parameter(torch.zeros(()))  # lambda = sigmoid(.)  eq. (9)
        self.embed = conv1x1(embed_dim, embed_dim, bias=True)  # eq. (10) conv
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, self.pos_grid, self.pos_grid))  # P0
        self.pos_proj = conv1x1(embed_dim, embed_dim)  # W_p

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.reduce(x)
        f_avg = F.avg_pool2d(x, self.pool_kernel)
        f_max = F.max_pool2d(x, self.pool_kernel)
        lam = torch.sigmoid(self.mix_logit)
        f = torch.addcmul(f_avg, lam, f_max - f_avg)  # eq. (9): lam * f_max + (1 - lam) * f_avg
        height, width = int(f.shape[-2]), int(f.shape[-1])
        pos = F.interpolate(self.pos_proj(self.pos_embed), size=(height, width), mode="bilinear", align_corners=False)
        f = self.embed(f) + pos.to(f.dtype)  # eq. (10)
        return flatten_tokens(f), height, width


class CASFM(nn.Module):
    """Cross-eye fusion of the two multi-scale feature maps into F_fuse [B,E,H/2,W/2]."""

    def __init__(self, in_channels: int, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.tokenize_left = EyeTokenizer(in_channels, embed_dim)
        self.tokenize_right = EyeTokenizer(in_channels, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.cross_attention = BidirectionalCrossAttention(embed_dim, num_heads)
        # alpha/beta of eq. (12), per eye: index 0 = left, 1 = right.
        self.alpha_logit = nn.Parameter(torch.zeros(2))
        self.beta_logit = nn.Parameter(torch.zeros(2))
        self.fuse = conv1x1(2 * embed_dim, embed_dim, bias=True)  # eq. (13)
        self.out_channels = embed_dim
        init_weights(self)
        nn.init.trunc_normal_(self.tokenize_left.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.tokenize_right.pos_embed, std=0.02)

    def forward(self, f_left: torch.Tensor, f_right: torch.Tensor) -> torch.Tensor:
        t_left, height, width = self.tokenize_left(f_left)
        t_right, _, _ = self.tokenize_right(f_right)
        cycled = eye_cycled(t_left, t_right)  # (T_l, T_r, T_l): both eyes' tokens in one tensor
        z = self.cross_attention.attend_cycled(self.norm(cycled))  # eq. (11): (Z_l W_O; Z_r W_O) [2B, N, E]
        tokens = cycled.unflatten(0, (3, -1))[:2]  # (T_l, T_r) [2, B, N, E], a view
        per_eye = (2, 1, 1, 1)  # alpha/beta index 0 = left, 1 = right, over the (2, B, N, E) stack
        alpha = torch.sigmoid(self.alpha_logit).to(z.dtype).view(per_eye)
        beta = torch.sigmoid(self.beta_logit).to(z.dtype).view(per_eye)
        t_both = torch.addcmul(beta * tokens, alpha, z.unflatten(0, (2, -1)))  # eq. (12)
        # Concat(T'_l, T'_r) along channels, as tokens [B, N, 2E] (one copy, like the concat it replaces)
        fused = t_both.permute(1, 2, 0, 3).flatten(2)
        return self.fuse(unflatten_tokens(fused, height, width))  # eq. (13)


class ConcatFusion(nn.Module):
    """The "w/o CASFM" fallback: Concat(F_l, F_r) -> 1x1 conv -> BN -> ReLU to E channels (full resolution)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(conv1x1(2 * in_channels, embed_dim), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True))
        self.out_channels = embed_dim
        init_weights(self)

    def forward(self, f_left: torch.Tensor, f_right: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([f_left, f_right], dim=1))
