"""An exponential moving average of a model's weights (Polyak averaging), for `dms-net-train --ema-decay`.

Why: the feature-bank recipe drives the training loss to ~0.05 within 12 epochs (8 stored views
per eye) and the epoch is then picked on 365 noisy validation patients; an average of the
last few hundred steps' weights is a flatter point than any single step's, which is what
timm's ``ModelEmaV3`` and torchvision's classification reference (``--model-ema``) use it for.
When EMA is on, the averaged weights are what the trainer evaluates each epoch, keeps as
``best.pt`` and exports: the raw weights only keep training.

Every floating entry of the state dict is averaged, BatchNorm running statistics included (as
timm does; they follow the averaged weights' inputs closely enough at these decays); integer
entries (``num_batches_tracked``) are copied. The decay warms up as ``min(decay, (1 + n) /
(10 + n))`` after ``n`` updates, so the first steps' random head is forgotten quickly.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn


class WeightEma:
    """The averaged copy of ``model`` (``.module``), updated after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema-decay {decay}: must be in (0, 1), e.g. 0.99 (about 100 steps of memory)")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses (warmed up over the first updates)."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- d * ema + (1 - d) * model, entry by entry over the state dicts."""
        d = self.current_decay()
        self.updates += 1
        for avg, live in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.lerp_(live.detach().to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(live)

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` keeps so a resumed run continues the same average."""
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"the run being resumed used --ema-decay {state['decay']}, not {self.decay}: "
                             "resume with the same value")
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
