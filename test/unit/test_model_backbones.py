"""Real backbones (torchvision / timm, random init at small sizes) and backbone weights.

Building ResNet-152 or ViT-B/16 costs seconds of weight init on 2 cores, hence ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dms_net_core.model import DMSNetConfig, build_model, create_backbone
from dms_net_core.model.weights import LITE0_MEAN, LITE0_STD, create_lite0_classifier, lite0_to_timm, lite0_weights_path

CNN_BACKBONES = ["resnet50", "resnet101", "resnet152", "resnext50_32x4d", "efficientnet_lite0"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", CNN_BACKBONES)
def test_cnn_backbones_stride_32(backbone: str) -> None:
    module, channels = create_backbone(DMSNetConfig.tiny(backbone=backbone))
    with torch.no_grad():
        out = module.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, channels, 2, 2)
    assert channels == (1280 if backbone == "efficientnet_lite0" else 2048)


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 96])
def test_vit_patch_grid_at_other_image_sizes(size: int) -> None:
    module, channels = create_backbone(DMSNetConfig.tiny(backbone="vit_b_16", image_size=size))
    with torch.no_grad():
        out = module.eval()(torch.randn(2, 3, size, size))
    assert out.shape == (2, channels, size // 16, size // 16) and channels == 768


def test_vit_rejects_size_not_multiple_of_16() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        create_backbone(DMSNetConfig.tiny(backbone="vit_b_16", image_size=72))


@pytest.mark.slow
def test_full_dms_net_on_a_real_backbone() -> None:
    cfg = DMSNetConfig.tiny(backbone="efficientnet_lite0")
    model = build_model(cfg).eval()
    with torch.no_grad():
        logits, att_left, att_right = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 8) and att_left.shape == att_right.shape == (2, 1, 2, 2)


def test_lite0_key_mapping_covers_timm_exactly() -> None:
    import timm

    packaged = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    mapped = lite0_to_timm(packaged)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(reference)
    for key, value in mapped.items():
        assert value.shape == reference[key].shape, key


@pytest.mark.slow
def test_lite0_imagenet_weights_classify_espresso() -> None:
    """Real ImageNet weights: skimage's coffee photo is class 967 'espresso' (mean = std = 0.5)."""
    skimage_data = pytest.importorskip("skimage.data")
    model = create_lite0_classifier(pretrained=True).eval()
    img = torch.from_numpy(np.ascontiguousarray(skimage_data.coffee())).permute(2, 0, 1).float()[None] / 255
    h, w = img.shape[-2:]
    side = min(h, w)
    img = img[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    img = F.interpolate(img, size=224, mode="bilinear", antialias=True, align_corners=False)
    img = (img - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(img).softmax(-1)[0]
    assert int(probs.argmax()) == 967
    assert float(probs[967]) > 0.5


@pytest.mark.slow
def test_lite0_backbone_loads_imagenet_weights() -> None:
    module, _ = create_backbone(DMSNetConfig.tiny(backbone="efficientnet_lite0", pretrained="imagenet"))
    packaged = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(module.model.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(module.model.conv_head.weight, packaged["_conv_head.weight"])


@pytest.mark.slow
def test_torchvision_weights_from_local_file(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    cfg = DMSNetConfig.tiny(backbone="resnet50", pretrained="imagenet", backbone_weights_path=str(path))
    module, _ = create_backbone(cfg)
    assert torch.equal(module.body[0].weight, reference.conv1.weight)
    assert torch.equal(module.body[-1][-1].bn3.running_var, reference.layer4[-1].bn3.running_var)


def test_missing_torchvision_weights_error_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="backbone_weights_path") as info:
        create_backbone(DMSNetConfig.tiny(backbone="resnet50", pretrained="imagenet"))
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(DMSNetConfig.tiny(backbone="resnet50", pretrained="imagenet", backbone_weights_path="/nope.pth"))
