"""DMS-Net model on tiny configs: shapes of every switch, the siamese graph, eye-swap properties,
gradients, exportable pooling and state round trips (CPU, seconds)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dms_net_core.model import DMSNet, DMSNetConfig, PlainBinocularNet, build_model
from dms_net_core.model.alignment import CCAM, CIAM
from dms_net_core.model.config import MULTISCALE_MODULES
from dms_net_core.model.pooling import adaptive_avg_pool2d

SIZE = 64
FEATURE = 4  # tiny backbone has stride 16


def _pair(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, SIZE, SIZE, generator=gen), torch.randn(batch, 3, SIZE, SIZE, generator=gen)


def _seeded(cfg: DMSNetConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg)


ABLATIONS = {
    "full": {},
    "plain_binocular": dict(architecture="plain_binocular"),
    "no_osim_left": dict(use_osim_left=False),
    "no_osim_right": dict(use_osim_right=False),
    "no_osim_both": dict(use_osim_left=False, use_osim_right=False),
    "no_casfm": dict(use_casfm=False),
    "no_ccam": dict(use_ccam=False),
    "no_ciam": dict(use_ciam=False),
    "no_ccam_no_ciam": dict(use_ccam=False, use_ciam=False),
    "no_cafm": dict(use_cafm=False),
    "ciam_product": dict(ciam_aggregation="product"),
    **{f"multiscale_{name}": dict(multiscale=name) for name in MULTISCALE_MODULES if name != "osim"},
}


@pytest.mark.parametrize("overrides", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_output_contract_for_every_switch(overrides: dict) -> None:
    cfg = DMSNetConfig.tiny(**overrides)
    model = _seeded(cfg).eval()
    left, right = _pair(batch=3)
    with torch.no_grad():
        out = model(left, right)
    assert isinstance(out, tuple) and len(out) == 3
    logits, att_left, att_right = out
    assert logits.shape == (3, cfg.num_classes)
    assert att_left.shape == att_right.shape == (3, 1, FEATURE, FEATURE)
    assert torch.isfinite(logits).all()
    for att in (att_left, att_right):
        assert ((att >= 0) & (att <= 1)).all()
    # Attention is OSIM's map where OSIM runs, all ones where it does not.
    osim_left = cfg.architecture == "dms_net" and cfg.multiscale == "osim" and cfg.use_osim_left
    osim_right = cfg.architecture == "dms_net" and cfg.multiscale == "osim" and cfg.use_osim_right
    assert torch.equal(att_left, torch.ones_like(att_left)) != osim_left
    assert torch.equal(att_right, torch.ones_like(att_right)) != osim_right


def test_build_model_dispatches_on_architecture() -> None:
    assert isinstance(build_model(DMSNetConfig.tiny()), DMSNet)
    assert isinstance(build_model(DMSNetConfig.tiny(architecture="plain_binocular")), PlainBinocularNet)


def test_switches_change_the_parameter_set() -> None:
    """Ablations really remove modules (not just skip them at run time)."""
    full = {n for n, _ in build_model(DMSNetConfig.tiny()).named_parameters()}
    no_ccam = {n for n, _ in build_model(DMSNetConfig.tiny(use_ccam=False)).named_parameters()}
    no_cafm = {n for n, _ in build_model(DMSNetConfig.tiny(use_cafm=False)).named_parameters()}
    no_osim_left = build_model(DMSNetConfig.tiny(use_osim_left=False))
    assert not any(n.startswith("ccam.") for n in no_ccam) and any(n.startswith("ccam.") for n in full)
    assert not any(".cafm." in n for n in no_cafm) and any(".cafm." in n for n in full)
    assert type(no_osim_left.multiscale_left).__name__ == "Projection"
    assert type(no_osim_left.multiscale_right).__name__ == "OSIM"


def test_one_backbone_runs_once_on_both_eyes() -> None:
    model = _seeded(DMSNetConfig.tiny()).eval()
    backbones = [m for m in model.modules() if type(m).__name__ == "TinyBackbone"]
    assert len(backbones) == 1
    calls: list[int] = []
    handle = model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    left, right = _pair(batch=2)
    with torch.no_grad():
        model(left, right)
    handle.remove()
    assert calls == [4]  # one call with left and right stacked along the batch


def test_eye_order_is_not_mixed_across_the_batch() -> None:
    """Sample i's logits depend on sample i's eyes only (the batch split is per eye, not interleaved)."""
    model = _seeded(DMSNetConfig.tiny()).eval()
    left, right = _pair(batch=3)
    with torch.no_grad():
        batched = model(left, right)[0]
        single = torch.cat([model(left[i : i + 1], right[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def _block_input(module: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = module.block.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    with torch.no_grad():
        module(a, b)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("use_cafm", [True, False])
def test_ccam_difference_flips_sign_when_eyes_swap(use_cafm: bool) -> None:
    torch.manual_seed(0)
    ccam = CCAM(16, 32, 4, growth=8, layers=2, use_cafm=use_cafm).eval()
    a, b = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    d_ab, d_ba = _block_input(ccam, a, b), _block_input(ccam, b, a)
    assert d_ab.abs().max() > 1e-3  # a real difference, not a degenerate zero
    torch.testing.assert_close(d_ba, -d_ab, rtol=1e-5, atol=1e-6)
    # The block itself is not sign-symmetric: which eye carries the lesion still matters.
    with torch.no_grad():
        assert not torch.allclose(ccam(a, b), ccam(b, a), atol=1e-4)


@pytest.mark.parametrize("aggregation", ["sum", "product"])
def test_ciam_aggregate_is_symmetric_in_the_eyes(aggregation: str) -> None:
    torch.manual_seed(0)
    ciam = CIAM(16, 32, 4, growth=8, layers=2, aggregation=aggregation).eval()
    a, b = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(_block_input(ciam, a, b), _block_input(ciam, b, a), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ciam(a, b), ciam(b, a), rtol=1e-5, atol=1e-6)


def test_cafm_aligns_with_the_other_eye() -> None:
    """With CAFM the contrastive input depends on both eyes' content beyond a pixelwise difference."""
    torch.manual_seed(0)
    with_cafm = CCAM(16, 32, 4, growth=8, layers=2, use_cafm=True).eval()
    without = CCAM(16, 32, 4, growth=8, layers=2, use_cafm=False).eval()
    without.load_state_dict(with_cafm.state_dict(), strict=False)
    a = torch.randn(1, 16, 4, 4)
    b = torch.randn(1, 16, 4, 4)
    assert not torch.allclose(_block_input(with_cafm, a, b), _block_input(without, a, b), atol=1e-4)


def test_identical_eyes_give_zero_contrast() -> None:
    """Same image in both eyes and the same multiscale weights per eye -> CCAM sees exactly zero."""
    model = _seeded(DMSNetConfig.tiny()).eval()
    model.multiscale_right.load_state_dict(model.multiscale_left.state_dict())
    left, _ = _pair(batch=2)
    seen: list[torch.Tensor] = []
    handle = model.ccam.block.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        model(left, left.clone())
    handle.remove()
    assert seen[0].abs().max() < 1e-5


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(architecture="plain_binocular"), dict(use_casfm=False, use_cafm=False), dict(ciam_aggregation="product")]
    + [dict(multiscale=name) for name in MULTISCALE_MODULES if name != "osim"],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "full",
)
def test_gradients_reach_every_trainable_parameter(overrides: dict) -> None:
    model = _seeded(DMSNetConfig.tiny(**overrides)).train()
    left, right = _pair(batch=2)
    target = torch.randint(0, 2, (2, 8)).float()
    logits, _, _ = model(left, right)
    F.binary_cross_entropy_with_logits(logits, target).backward()
    for name, param in model.named_parameters():
        assert param.requires_grad
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("backbone."))


@pytest.mark.parametrize("size", [7, 8, 14, 5])
@pytest.mark.parametrize("grid", [1, 2, 4])
def test_exportable_adaptive_pool_equals_torch(size: int, grid: int) -> None:
    x = torch.randn(2, 3, size, size + 1)
    torch.testing.assert_close(adaptive_avg_pool2d(x, grid), F.adaptive_avg_pool2d(x, grid), rtol=1e-6, atol=1e-6)


def test_autocast_bf16_channels_last_forward() -> None:
    model = _seeded(DMSNetConfig.tiny()).eval().to(memory_format=torch.channels_last)
    left, right = _pair()
    left, right = left.to(memory_format=torch.channels_last), right.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, att_left, _ = model(left, right)
    with torch.no_grad():
        ref = model(left, right)[0]
    assert torch.isfinite(logits.float()).all() and att_left.shape == (2, 1, FEATURE, FEATURE)
    torch.testing.assert_close(logits.float(), ref, rtol=0.1, atol=0.1)


def test_safetensors_round_trip_is_exact(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    cfg = DMSNetConfig.tiny()
    model = _seeded(cfg).eval()
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(123)
    restored = build_model(cfg).eval()
    restored.load_state_dict(load_file(str(path)), strict=True)
    left, right = _pair()
    with torch.no_grad():
        for a, b in zip(model(left, right), restored(left, right)):
            assert torch.equal(a, b)


def test_checkpoint_dict_round_trip_with_weights_only(tmp_path) -> None:
    cfg = DMSNetConfig.tiny(ciam_aggregation="product", multiscale="sppf")
    model = _seeded(cfg).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "thresholds": [0.5] * 8, "epoch": 3}, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg2 = DMSNetConfig.from_dict(ckpt["model_config"])
    assert dataclasses.asdict(cfg2) == dataclasses.asdict(cfg)
    restored = build_model(cfg2).eval()
    restored.load_state_dict(ckpt["model"], strict=True)
    left, right = _pair()
    with torch.no_grad():
        assert torch.equal(model(left, right)[0], restored(left, right)[0])


def test_tiny_backbone_rejects_imagenet_weights() -> None:
    with pytest.raises(ValueError, match="pretrained=None"):
        build_model(DMSNetConfig.tiny(pretrained="imagenet"))


def test_exportable_adaptive_pool_keeps_channels_last() -> None:
    x = torch.randn(2, 8, 14, 14).to(memory_format=torch.channels_last)
    pooled = adaptive_avg_pool2d(x, 4)
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, 4), rtol=1e-6, atol=1e-6)
