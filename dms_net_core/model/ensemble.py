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

Two options change the cost, not the numbers:

- ``mirror=True``: every member also sees the mirrored pair (horizontal-flip test-time
  augmentation, `dms_net_core.model.tta`), averaged with the plain pass. Averaging the members'
  mean over the two passes equals averaging each member's own two-pass mean (both are plain means
  of probabilities), and the calibration offsets still apply once, to the final mean.
- ``prefix_stage=K``: the members' stem and first K backbone stages are one and the same
  function (`dms_net_core.model.stage_split.shared_frozen_prefix` checks that bit for bit), so
  it runs once per eye and pass, and every member runs only its own later stages and heads.
  Members trained from one feature bank share their frozen stages: five such members cost
  about as much as three unshared ones.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .cam import mean_maps, provides_cams
from .stage_split import BackbonePrefix, FromStage, shared_frozen_prefix

#: Probabilities are clamped to [EPS, 1 - EPS] before the logit, so a member that is certain
#: cannot produce +-inf (fp32: 1 - 1e-7 is still < 1).
EPS = 1e-7


class EnsembleNet(nn.Module):
    """Mean-probability ensemble; ``attention_from`` picks whose attention maps are returned."""

    def __init__(self, members: Sequence[nn.Module], attention_from: int = 0, per_eye: bool = False,
                 logit_offsets: Sequence[float] | None = None, mirror: bool = False,
                 prefix_stage: int | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}: "
                             "export a single model with dms-net-export")
        if not 0 <= attention_from < len(members):
            raise ValueError(f"attention_from {attention_from} is not a member index (0..{len(members) - 1})")
        self.prefix: nn.Module | None = None
        self.prefix_stage = prefix_stage
        if prefix_stage is not None:
            shared = shared_frozen_prefix(members)
            if prefix_stage < 0 or prefix_stage > shared:
                raise ValueError(f"prefix_stage={prefix_stage} but the members share their stem and first {shared} "
                                 "stages only (-1: not even the stem): build with prefix_stage=None or at most that")
            self.prefix = BackbonePrefix(members[0].backbone, prefix_stage)
            members = [FromStage(m, prefix_stage) for m in members]
        self.members = nn.ModuleList(members)
        self.mirror = mirror
        self.attention_from = attention_from
        self.per_eye = per_eye
        offsets = torch.tensor(list(logit_offsets), dtype=torch.float32) if logit_offsets is not None else None
        self.register_buffer("logit_offsets", offsets, persistent=False)
        #: CAMs need the per-eye outputs they explain
        self.provides_cams = per_eye and any(provides_cams(m) for m in self.members)

    def forward(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool = False) -> tuple[torch.Tensor, ...]:
        if with_cams and not self.provides_cams:
            raise ValueError("with_cams=True but no member provides class activation maps "
                             "(plain binocular with per-eye heads)")
        outputs = self._mean(left, right, with_cams)
        if self.mirror:
            outputs = merge_mirrored(outputs, self._mean(left.flip(-1), right.flip(-1), with_cams), with_cams)
        if self.logit_offsets is None:
            return outputs
        return (outputs[0] + self.logit_offsets, *outputs[1:])  # calibration of the mean (dms_net_core.calibration)

    def _mean(self, left: torch.Tensor, right: torch.Tensor, with_cams: bool) -> tuple[torch.Tensor, ...]:
        """One pass: the members' mean, uncalibrated."""
        if self.prefix is not None:  # once per eye for every member (run together, like run_siamese)
            left, right = self.prefix(torch.cat([left, right], dim=0)).unflatten(0, (2, -1)).unbind(0)
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
        outputs = (mean_probability_logit(probs), attention[0], attention[1])
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


def merge_mirrored(plain: tuple[torch.Tensor, ...], mirrored: tuple[torch.Tensor, ...],
                   with_cams: bool) -> tuple[torch.Tensor, ...]:
    """The outputs of a pair and of its mirror as one: every logit = logit(mean p over the two
    passes); attention maps from the plain pass (they overlay the image the clinician sees);
    class activation maps averaged after un-mirroring the mirrored pass's (width is the last axis)."""
    heads = slice(3, len(plain) - 2) if with_cams else slice(3, None)  # the per-eye logits
    merged = [mean_probability_logit([torch.sigmoid(a.float()), torch.sigmoid(b.float())])
              for a, b in zip(plain[:1] + plain[heads], mirrored[:1] + mirrored[heads])]
    outputs = (merged[0], plain[1], plain[2], *merged[1:])
    if not with_cams:
        return outputs
    cams = [(a.float() + b.float().flip(-1)) / 2 for a, b in zip(plain[-2:], mirrored[-2:])]
    return (*outputs, *cams)
