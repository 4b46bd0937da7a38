"""A probability-averaging ensemble of DMS-Net / control models behind the one-model interface.

Several trained models (seeds, or DMS-Net and the plain control) usually score better
together than any one of them; the issue allows "a single model or a documented ensemble
the node can run". The node runs one bundle with one ONNX graph, so the ensemble *is* one
module: ``forward(left, right)`` runs every member and returns

- ``logits = logit(mean_i sigmoid(logits_i))``: the members' probabilities averaged, written
  as a logit so every consumer's ``sigmoid(logits)`` gives the mean probability;
- the attention maps of the first DMS-Net member (the OSIM overlay the clinician sees; the
  control has none), or the first member's all-ones maps when no member has OSIM;
- with ``per_eye=True`` (any member has per-eye heads), ``left_logits``/``right_logits``:
  the mean per-eye probability of the members that have per-eye heads, as logits;
- ``logit_offsets``: per-class offsets added to the mean's logits (`dms_net_core.calibration`,
  fitted on the ensemble's own validation probabilities by ``dms-net-ensemble``);
- with ``forward(..., with_cams=True)`` (any member ``provides_cams``, `dms_net_core.model.cam`),
  ``cam_left``/``cam_right``: the mean of those members' class activation maps.

Members must agree on image size (they see the same preprocessed input; the exporter
also checks their preprocessing).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .cam import mean_maps, provides_cams

#: Probabilities are clamped to [EPS, 1 - EPS] before the logit, so a member that is certain
#: cannot produce +-inf (fp32: 1 - 1e-7 is still < 1).
EPS = 1e-7


class EnsembleNet(nn.Module):
    """Mean-probability ensemble; ``attention_from`` picks whose attention maps are returned."""

    def __init__(self, members: Sequence[nn.Module], attention_from: int = 0, per_eye: bool = False,
                 logit_offsets: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}: export a single model with dms-net-export")
        if not 0 <= attention_from < len(members):
            raise ValueError(f"attention_from {attention_from} is not a member index (0..{len(members) - 1})")
        self.members = nn.ModuleList(members)
        self.attention_from = attention_from
        self.per_eye = per_eye
        offsets = torch.tensor(list(logit_offsets), dtype=torch.float32) if logit_offsets is not None else None
        self.register_buffer("logit_offsets", offsets, persistent=False)
        #: CAMs need the per-eye outputs they explain
        self.provides_cams = per_eye and any(provides_cams(m) for m in self.members)

    def forward(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool = False) -> tuple[torch.Tensor, ...]:
        if with_cams and not self.provides_cams:
            raise ValueError("with_cams=True but no member provides class activation maps (plain binocular with per-eye heads)")
        probs, eye_left, eye_right, cam_left, cam_right = [], [], [], [], []
        attention = None
        for i, member in enumerate(self.members):
            cams = with_cams and provides_cams(member)
            logits, att_left, att_right, *eyes = member(left, right, with_cams=True) if cams else member(left, right)
            if cams:
                cam_left.append(eyes[-2])
                cam_right.append(eyes[-1])
                eyes = eyes[:-2]
            probs.append(torch.sigmoid(logits.float()))
            if eyes:
                eye_left.append(torch.sigmoid(eyes[0].float()))
                eye_right.append(torch.sigmoid(eyes[1].float()))
            if i == self.attention_from:
                attention = (att_left, att_right)
        assert attention is not None
        logits = mean_probability_logit(probs)
        if self.logit_offsets is not None:  # calibration of the mean (dms_net_core.calibration)
            logits = logits + self.logit_offsets
        outputs = (logits, attention[0], attention[1])
        if not self.per_eye:
            return outputs
        if not eye_left:
            raise ValueError("per_eye=True but no member has per-eye heads: build the ensemble with per_eye=False")
        outputs = (*outputs, mean_probability_logit(eye_left), mean_probability_logit(eye_right))
        return (*outputs, mean_maps(cam_left), mean_maps(cam_right)) if with_cams else outputs


def mean_probability_logit(probs: list[torch.Tensor]) -> torch.Tensor:
    """logit(mean p), clamped so a certain member cannot make it infinite."""
    p = torch.stack(probs, dim=0).mean(dim=0).clamp(EPS, 1.0 - EPS)
    return torch.log(p) - torch.log1p(-p)
