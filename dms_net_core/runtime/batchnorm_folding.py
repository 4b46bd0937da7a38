"""Fold inference-mode BatchNorm layers into the convolution that feeds them.

Why: in eager PyTorch (and inside a captured CUDA graph) every BatchNorm is its own kernel and
one more full pass over the activation. ResNet-152 has 155 of them; at batch 1 the GPU time of a
DMS-Net pair is dominated by such small kernels, not by arithmetic. With running statistics
frozen, ``BN(conv(x)) == conv'(x)`` with ``W' = W * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta``, so the BN can be removed. ONNX Runtime and TensorRT
do this themselves when they optimise the graph; this module gives the PyTorch backend the same.

Which BN follows which conv is found by running the model once on an example input and
watching module calls (a conv's output tensor being the very tensor a BN receives), so it works
for any backbone without per-architecture rules: torchvision ResNets, timm's EfficientNet
(whose ``BatchNormAct2d`` keeps its activation after folding) and the DMS-Net heads. A fold is
only correct if nothing else reads the conv's raw output; that is not visible from module
hooks, so the outputs are compared with the unfolded model's and every fold is undone if they
differ (logged, never silent).
"""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

LOGGER = logging.getLogger("dms_net_core.runtime")

#: Folded outputs must match the unfolded ones within this fraction of the largest |output|:
#: fp32 rounding through ~60 folded layers reaches ~1e-4; a wrong fold is off by O(1).
FOLD_RELATIVE_TOLERANCE = 1e-3


@dataclass
class _Fold:
    """One applied fold, kept so that it can be undone."""

    conv_parent: nn.Module
    conv_name: str
    conv: nn.Conv2d
    bn_parent: nn.Module
    bn_name: str
    bn: nn.BatchNorm2d


def _parents(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(module) -> every (parent, attribute name) that holds it."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            owners.setdefault(id(child), []).append((parent, name))
    return owners


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of a BN after its affine transform moved into the conv (None: not foldable)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Module) and isinstance(act, nn.Module):  # timm BatchNormAct2d: BN -> drop -> act
        return nn.Sequential(drop, act)
    return None


def _find_pairs(model: nn.Module,
                example_inputs: Sequence[torch.Tensor]) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], Any]:
    """Run ``model`` once; return the (conv, bn) pairs where a BN consumed a conv output, and the outputs."""
    # id(tensor) -> (weak reference, conv): weak, so the trace does not hold every activation
    # of the network (about a gigabyte for ResNet-152 at 448 px); a dead reference never matches.
    produced: dict[int, tuple[weakref.ref, nn.Conv2d]] = {}
    seen: dict[int, set[int]] = {}  # id(bn) -> ids of the convs that fed it (several: not foldable)
    conv_uses: dict[int, int] = {}  # id(conv) -> number of calls
    fed: dict[tuple[int, int], int] = {}  # (id(conv), id(bn)) -> calls where this conv's output went into this BN
    pairs: dict[int, tuple[nn.Conv2d, nn.BatchNorm2d]] = {}

    def after_conv(module: nn.Module, _inputs: Any, output: Any) -> None:
        conv_uses[id(module)] = conv_uses.get(id(module), 0) + 1
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (weakref.ref(output), module)  # type: ignore[assignment]

    def before_bn(module: nn.Module, inputs: Any) -> None:
        source = produced.get(id(inputs[0])) if inputs else None
        feeders = seen.setdefault(id(module), set())
        if source is None or source[0]() is not inputs[0]:
            feeders.add(-1)  # fed by something that is not a conv output
            return
        feeders.add(id(source[1]))
        key = (id(source[1]), id(module))
        fed[key] = fed.get(key, 0) + 1
        pairs[id(module)] = (source[1], module)  # type: ignore[assignment]

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.inference_mode():
            outputs = model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    # A conv may run several times (both eyes through one backbone, an ensemble's mirrored pass):
    # it is foldable when EVERY call's output went into this one BN and that BN read nothing else.
    usable = []
    for bn_id, (conv, bn) in pairs.items():
        if seen[bn_id] == {id(conv)} and conv_uses.get(id(conv)) == fed.get((id(conv), bn_id)):
            usable.append((conv, bn))
    return usable, outputs


def _flatten(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flatten(item)]


def _max_relative_error(reference: Any, candidate: Any) -> float:
    worst = 0.0
    for ref, new in zip(_flatten(reference), _flatten(candidate)):
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        diff = float((ref.float() - new.float()).abs().max()) if ref.numel() else 0.0
        worst = max(worst, diff / max(scale, 1e-6))
    return worst


def fold_batchnorm(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> int:
    """Fold, in place, every eval-mode BatchNorm2d fed only by one Conv2d; return how many.

    ``model`` must be in eval mode (training-mode BN uses batch statistics and cannot be
    folded). ``example_inputs`` are passed to ``model(*example_inputs)`` twice (to find the
    pairs, then to check the result); any shape the model accepts works. When the folded
    model's outputs differ from the original's by more than `FOLD_RELATIVE_TOLERANCE`, every
    fold is undone, a warning says so, and 0 is returned.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs model.eval(): training-mode BatchNorm uses batch statistics")
    pairs, reference = _find_pairs(model, example_inputs)
    owners = _parents(model)
    folds: list[_Fold] = []
    for conv, bn in pairs:
        conv_owner, bn_owner = owners.get(id(conv), []), owners.get(id(bn), [])
        replacement = _bn_replacement(bn)
        if len(conv_owner) != 1 or len(bn_owner) != 1 or replacement is None or not bn.track_running_stats:
            continue
        # A copy keeps the conv's own class: timm's tf_ models use Conv2dSame (padding computed
        # in forward), which a plain nn.Conv2d would silently change.
        fused = copy.deepcopy(conv)
        fused.weight, fused.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        (conv_parent, conv_name), (bn_parent, bn_name) = conv_owner[0], bn_owner[0]
        setattr(conv_parent, conv_name, fused)
        setattr(bn_parent, bn_name, replacement)
        folds.append(_Fold(conv_parent, conv_name, conv, bn_parent, bn_name, bn))
    if not folds:
        return 0
    with torch.inference_mode():
        folded = model(*example_inputs)
    error = _max_relative_error(reference, folded)
    if error > FOLD_RELATIVE_TOLERANCE:
        for fold in reversed(folds):
            setattr(fold.bn_parent, fold.bn_name, fold.bn)
            setattr(fold.conv_parent, fold.conv_name, fold.conv)
        LOGGER.warning(
            "BatchNorm folding changed the outputs (max relative error %.2e > %.0e), so it was undone: "
            "this model reads a convolution's raw output elsewhere; run with fold_batchnorm=False to skip the check",
            error, FOLD_RELATIVE_TOLERANCE,
        )
        return 0
    LOGGER.info("folded %d BatchNorm layers into their convolutions (max relative change %.1e)", len(folds), error)
    return len(folds)
