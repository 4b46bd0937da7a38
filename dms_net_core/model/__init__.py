"""DMS-Net model package: ``build_model(cfg)`` is the one entry point other code should use.

Torch-free on import: ``DMSNetConfig`` (and ``dms_net_core.model.config``) must load on a
robot without PyTorch, because the model bundle stores the config and the ROS node reads
bundles with ONNX Runtime/TensorRT only. The torch-based names below are imported lazily
(PEP 562 ``__getattr__``) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import DMSNetConfig

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["DMSNet", "DMSNetConfig", "PlainBinocularNet", "build_model", "create_backbone", "create_multiscale"]

_LAZY = {
    "DMSNet": ".dms_net",
    "PlainBinocularNet": ".baseline",
    "create_backbone": ".backbones",
    "create_multiscale": ".multiscale",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(cfg: DMSNetConfig, reference_heads: bool = False) -> "nn.Module":
    """Build the model described by ``cfg`` (dispatch on ``cfg.architecture``).

    ``forward(left, right)`` -> ``(logits [B,num_classes], attention_left [B,1,h,w], attention_right [B,1,h,w])``.
    ``reference_heads=True`` gives the heads' pre-issue-15 forms (same parameters and numbers,
    more kernels; `reference_heads.py`): for equivalence tests and before/after benchmarks only.
    """
    from .baseline import PlainBinocularNet
    from .dms_net import DMSNet

    architectures = {"dms_net": DMSNet, "plain_binocular": PlainBinocularNet}
    if cfg.architecture not in architectures:
        raise ValueError(f"unknown architecture {cfg.architecture!r}: choose one of {', '.join(architectures)}")
    model = architectures[cfg.architecture](cfg)
    if reference_heads:
        from .reference_heads import use_reference_heads

        use_reference_heads(model)
    return model
