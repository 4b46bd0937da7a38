"""DMS-Net's heads as they computed before issue 15: the yardstick for the faster forms.

Issue 15 rewrote how OSIM, CASFM, CAFM and the bidirectional attention compute (fewer kernels,
fewer FLOPs at batch 1) under the rule that the numbers and the parameters stay the same. The
straightforward forms they replaced are kept here, verbatim in their arithmetic, so that

- the tests can hold the fast forms to the straightforward ones on the same weights
  (`test/unit/test_heads_equivalence.py`), and
- a benchmark can time before and after in one process on one GPU (``dms-net-bench`` rows
  ``...-reference-heads``; `benchmarks/heads_breakdown.py --reference-heads`), since GPU rows
  are only comparable within one run.

`use_reference_heads(model)` switches a built model in place by reassigning each head
module's class to its reference subclass, which overrides ``forward`` only: the instance keeps
its parameters, buffers and names, so any state_dict (and BatchNorm folding) applies to either
form. Nothing in training or serving uses this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import CAFM, CCAM, CIAM
from .attention import BidirectionalCrossAttention
from .casfm import CASFM, EyeTokenizer
from .layers import flatten_tokens, unflatten_tokens
from .osim import OSIM, MultiScaleProjection, multiscale_concat


class ReferenceOSIM(OSIM):
    """Eqs. (1)-(7) as written: the 5C-channel concat, then the 1x1 convolution."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_ccp = self.compress(multiscale_concat(x, self.pool_grids))  # eqs. (5)-(6); compress[0] is a plain conv here
        attention = torch.sigmoid(self.spatial_attention(f_ccp))  # eq. (7)
        return f_ccp * attention, attention


class ReferenceBidirectionalCrossAttention(BidirectionalCrossAttention):
    """Keys/values swapped between the eyes by two ``flip`` copies."""

    def forward(self, t_a: torch.Tensor, t_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([t_a, t_b], dim=0)  # [2B, N, E]: eye a first, then eye b
        n, dim = tokens.shape[1], tokens.shape[2]
        qkv = self.qkv(tokens).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [2B, heads, N, head_dim]
        k = k.unflatten(0, (2, -1)).flip(0).flatten(0, 1)
        v = v.unflatten(0, (2, -1)).flip(0).flatten(0, 1)
        z = F.scaled_dot_product_attention(q, k, v)  # eq. (11)
        z = self.proj(z.transpose(1, 2).reshape(-1, n, dim))
        z_a, z_b = z.unflatten(0, (2, -1)).unbind(0)
        return z_a, z_b


class ReferenceCAFM(CAFM):
    """One LayerNorm call and one residual add per eye."""

    def forward(self, x_left: torch.Tensor, x_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = int(x_left.shape[-2]), int(x_left.shape[-1])
        t_left, t_right = flatten_tokens(x_left), flatten_tokens(x_right)
        z_left, z_right = self.cross_attention(self.norm(t_left), self.norm(t_right))
        return (
            x_left + unflatten_tokens(z_left, height, width),
            x_right + unflatten_tokens(z_right, height, width),
        )


class _ReferenceAlign:
    """CCAM/CIAM's alignment with CAFM called per eye."""

    def align(self, x_left: torch.Tensor, x_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.project(torch.cat([x_left, x_right], dim=0))  # type: ignore[attr-defined]
        a_left, a_right = both.unflatten(0, (2, -1)).unbind(0)
        if self.cafm is None:  # type: ignore[attr-defined]
            return a_left, a_right
        return self.cafm(a_left, a_right)  # type: ignore[attr-defined]


class ReferenceCCAM(_ReferenceAlign, CCAM):
    pass


class ReferenceCIAM(_ReferenceAlign, CIAM):
    pass


class ReferenceEyeTokenizer(EyeTokenizer):
    """Eq. (9) as written: lambda * F^max + (1 - lambda) * F^avg."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.reduce(x)
        f_avg = F.avg_pool2d(x, self.pool_kernel)
        f_max = F.max_pool2d(x, self.pool_kernel)
        lam = torch.sigmoid(self.mix_logit)
        f = lam * f_max + (1 - lam) * f_avg  # eq. (9)
        height, width = int(f.shape[-2]), int(f.shape[-1])
        pos = F.interpolate(self.pos_proj(self.pos_embed), size=(height, width), mode="bilinear", align_corners=False)
        f = self.embed(f) + pos.to(f.dtype)  # eq. (10)
        return flatten_tokens(f), height, width


class ReferenceCASFM(CASFM):
    """Eqs. (11)-(13) per eye: two LayerNorm calls, per-eye residuals, a channel concat."""

    def forward(self, f_left: torch.Tensor, f_right: torch.Tensor) -> torch.Tensor:
        t_left, height, width = self.tokenize_left(f_left)
        t_right, _, _ = self.tokenize_right(f_right)
        z_left, z_right = self.cross_attention(self.norm(t_left), self.norm(t_right))  # eq. (11)
        alpha = torch.sigmoid(self.alpha_logit).to(t_left.dtype)
        beta = torch.sigmoid(self.beta_logit).to(t_left.dtype)
        t_left = alpha[0] * z_left + beta[0] * t_left  # eq. (12)
        t_right = alpha[1] * z_right + beta[1] * t_right
        fused = torch.cat([unflatten_tokens(t_left, height, width), unflatten_tokens(t_right, height, width)], dim=1)
        return self.fuse(fused)  # eq. (13)


#: fast class -> its reference form (exact types: a subclass elsewhere keeps its own forward)
REFERENCE_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    MultiScaleProjection: nn.Conv2d,  # ReferenceOSIM feeds it the 5C concat
    OSIM: ReferenceOSIM,
    BidirectionalCrossAttention: ReferenceBidirectionalCrossAttention,
    CAFM: ReferenceCAFM,
    CCAM: ReferenceCCAM,
    CIAM: ReferenceCIAM,
    EyeTokenizer: ReferenceEyeTokenizer,
    CASFM: ReferenceCASFM,
}


def use_reference_heads(model: nn.Module) -> nn.Module:
    """Switch every head module of ``model`` (in place) to its pre-issue-15 forward; returns it."""
    for module in model.modules():
        reference = REFERENCE_CLASSES.get(type(module))
        if reference is not None:
            module.__class__ = reference
    return model
