"""Issue 15 changed how DMS-Net's heads compute (fewer kernels and FLOPs), never what.

Held against these yardsticks, on real fundus photographs:
- a checkpoint written by the code *before* the rewrite, with its outputs from that code
  (``test/data/heads_reference``): it loads with ``strict=True`` and gives the same outputs,
  eager and exported to ONNX;
- the pre-rewrite forms kept in `dms_net_core.model.reference_heads`, on the same weights: outputs
  and gradients of every head configuration, with and without BatchNorm folding;
- (until 2026-11-30, when the demo model became a plain per-eye ensemble) the then-shipped
  DMS-Net demo bundle, trained on ODIR-5K: today's model code, given its weights read back from
  its ONNX graph, reproduced that graph's outputs within 2.4e-6 (RESULTS.md 6).
The tolerance is the project's for real images: 1e-4 in probability and attention (fp32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dms_net_core.data.preprocess import PreprocessConfig, normalize_batch
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.model.config import MULTISCALE_MODULES
from dms_net_core.model.osim import MultiScaleProjection, multiscale_concat
from dms_net_core.runtime.batchnorm_folding import fold_batchnorm
from test.fakes.tiny_bundle import real_pair_batch
from test.odir_data import REPO

REFERENCE_DIR = REPO / "test" / "data" / "heads_reference"
REFERENCE_CONFIG = dict(image_size=112, per_eye_heads=True)  # 7x7 maps: uneven adaptive-pool bins
OUTPUT_NAMES = ("logits", "attention_left", "attention_right", "left_logits", "right_logits")
TOLERANCE = 1e-4


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _assert_same_outputs(got: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                         logit_tolerance: float = TOLERANCE) -> None:
    for name, want in expected.items():
        have = got[name]
        assert have.shape == want.shape, name
        if name.endswith("logits"):
            np.testing.assert_allclose(_sigmoid(have), _sigmoid(want), atol=TOLERANCE, rtol=0, err_msg=name)
            np.testing.assert_allclose(have, want, atol=logit_tolerance, rtol=0, err_msg=name)
        else:
            np.testing.assert_allclose(have, want, atol=TOLERANCE, rtol=0, err_msg=name)


@pytest.fixture(scope="module")
def reference_checkpoint() -> tuple[DMSNetConfig, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    cfg = DMSNetConfig.tiny(**REFERENCE_CONFIG)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(REFERENCE_DIR / "weights.safetensors")).items()}
    with np.load(REFERENCE_DIR / "outputs.npz") as saved:
        outputs = {name: saved[name] for name in OUTPUT_NAMES}
    return cfg, state, outputs


@pytest.fixture(scope="module")
def real_batch_112() -> tuple[torch.Tensor, torch.Tensor]:
    """The two real eye pairs the reference outputs were computed on, as prepared then
    (``inputs.npz``: frozen, so a later change to the preprocessing cannot move them)."""
    with np.load(REFERENCE_DIR / "inputs.npz") as saved:
        left, right = (normalize_batch(saved[side], PreprocessConfig(image_size=112)) for side in ("left", "right"))
    return torch.from_numpy(left), torch.from_numpy(right)


def test_a_checkpoint_from_before_the_rewrite_loads_strictly_and_gives_its_outputs(reference_checkpoint,
                                                                                   real_batch_112):
    cfg, state, expected = reference_checkpoint
    model = build_model(cfg).eval()
    model.load_state_dict(state, strict=True)  # same parameter names and shapes
    assert isinstance(model.multiscale_left.compress[0], MultiScaleProjection)  # the rewritten form runs
    with torch.inference_mode():
        got = {name: t.numpy() for name, t in zip(OUTPUT_NAMES, model(*real_batch_112))}
    assert np.ptp(_sigmoid(expected["logits"])) > 0.5  # spread out, so agreement means something
    _assert_same_outputs(got, expected)


def test_the_rewritten_heads_export_to_onnx_with_the_checkpoints_outputs(reference_checkpoint, real_batch_112,
                                                                         tmp_path):
    """The bundle's ONNX graph is a contract: same outputs, names and numbers, dynamic batch."""
    import onnxruntime as ort

    from dms_net_core.bundle_export import export_bundle

    cfg, state, expected = reference_checkpoint
    model = build_model(cfg).eval()
    model.load_state_dict(state, strict=True)
    bundle = export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), tmp_path / "bundle", name="issue15")
    assert bundle.meta["export"]["exporter"].startswith("torchscript")  # the exporter the bundles ship with
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES == bundle.output_names
    left, right = (t.numpy() for t in real_batch_112)
    got = dict(zip(OUTPUT_NAMES, session.run(None, {"left": left, "right": right})))
    _assert_same_outputs(got, expected)
    single = dict(zip(OUTPUT_NAMES, session.run(None, {"left": left[1:], "right": right[1:]})))
    _assert_same_outputs(single, {k: v[1:] for k, v in expected.items()})


HEAD_CONFIGS = {
    "full-7x7": dict(image_size=112),
    "full-4x4": dict(image_size=64),
    "full-8x8-per-eye-neck": dict(image_size=128, per_eye_heads=True, neck_channels=24),
    "no-cafm": dict(use_cafm=False),
    "no-casfm": dict(use_casfm=False),
    "no-osim-left": dict(use_osim_left=False),
    "ciam-product": dict(ciam_aggregation="product"),
    **{f"multiscale-{name}": dict(multiscale=name) for name in MULTISCALE_MODULES
       if name not in ("osim", "spp", "simsppf")},
}


def _pair(cfg: DMSNetConfig, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    left, right = (torch.from_numpy(a) for a in real_pair_batch(cfg.image_size))
    if channels_last:
        left, right = (left.contiguous(memory_format=torch.channels_last),
                       right.contiguous(memory_format=torch.channels_last))
    return left, right


def _twins(cfg: DMSNetConfig, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The rewritten model and the reference-heads model with the same random weights."""
    torch.manual_seed(seed)
    fast = build_model(cfg)
    reference = build_model(cfg, reference_heads=True)
    reference.load_state_dict(fast.state_dict(), strict=True)
    return fast, reference


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("overrides", HEAD_CONFIGS.values(), ids=HEAD_CONFIGS.keys())
def test_rewritten_heads_match_the_reference_heads_on_real_images(overrides: dict, channels_last: bool) -> None:
    cfg = DMSNetConfig.tiny(**overrides)
    fast, reference = (m.eval() for m in _twins(cfg))
    if channels_last:
        fast, reference = (m.to(memory_format=torch.channels_last) for m in (fast, reference))
    pair = _pair(cfg, channels_last)
    with torch.inference_mode():
        got, want = fast(*pair), reference(*pair)
    names = OUTPUT_NAMES[: len(want)]
    _assert_same_outputs({n: t.numpy() for n, t in zip(names, got)}, {n: t.numpy() for n, t in zip(names, want)})


def test_training_gradients_match_the_reference_heads() -> None:
    """The rewrite is the same function of the weights, so training is unchanged too."""
    cfg = DMSNetConfig.tiny(image_size=112, per_eye_heads=True)
    fast, reference = (m.train() for m in _twins(cfg))
    pair = _pair(cfg)
    target = torch.randint(0, 2, (2, 8), generator=torch.Generator().manual_seed(0)).float()
    grads = []
    for model in (fast, reference):
        torch.manual_seed(1)  # the same dropout masks
        outputs = model(*pair)
        loss = sum(F.binary_cross_entropy_with_logits(o, target) for o in (outputs[0], *outputs[3:]))
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_batchnorm_folding_folds_as_much_and_keeps_the_numbers() -> None:
    """The torch backend's default: folded, the rewritten heads still give the reference's outputs."""
    cfg = DMSNetConfig.tiny(image_size=112, per_eye_heads=True)
    fast, reference = (m.eval() for m in _twins(cfg))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # statistics that make each fold change the weights
        for model in (fast, reference):
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.2)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
        reference.load_state_dict(fast.state_dict())
    pair = _pair(cfg)
    with torch.inference_mode():
        want = [t.clone() for t in reference(*pair)]
    example = (pair[0][:1], pair[1][:1])
    folded_fast = fold_batchnorm(fast, example)
    assert folded_fast == fold_batchnorm(reference, example) > 0
    assert isinstance(fast.multiscale_left.compress[1], torch.nn.Identity)  # OSIM's BN went into MultiScaleProjection
    assert fast.multiscale_left.compress[0].bias is not None
    with torch.inference_mode():
        got = fast(*pair)
    _assert_same_outputs({n: t.numpy() for n, t in zip(OUTPUT_NAMES, got)},
                         {n: t.numpy() for n, t in zip(OUTPUT_NAMES, want)})


@pytest.mark.parametrize("size", [2, 4, 7, 8, 14])
def test_multiscale_projection_is_the_convolution_of_the_concat(size: int) -> None:
    torch.manual_seed(size)
    conv = MultiScaleProjection(16, 8, (2, 4), bias=True)
    x = torch.randn(3, 16, size, size)
    with torch.no_grad():
        want = F.conv2d(multiscale_concat(x, (2, 4)), conv.weight, conv.bias)
        nchw, nhwc = conv(x), conv(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nchw, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nhwc, want, atol=1e-5, rtol=1e-5)
    # the layout of what follows is the input's: NCHW on the CPU (training there), NHWC on the GPU
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_the_form_torch_compile_traces_matches_the_reference_heads(channels_last: bool) -> None:
    """Under torch.compile MultiScaleProjection writes pools/upsampling as reductions and interpolation
    (which Inductor fuses); dynamo's trace of the whole model (eager backend, seconds) must give the
    reference's outputs, and never touch the module (no operator buffers made inside a graph)."""
    cfg = DMSNetConfig.tiny(image_size=112, per_eye_heads=True)
    fast, reference = (m.eval() for m in _twins(cfg))
    if channels_last:
        fast, reference = (m.to(memory_format=torch.channels_last) for m in (fast, reference))
    pair = _pair(cfg, channels_last)
    torch._dynamo.reset()
    with torch.no_grad():
        got, want = torch.compile(fast, backend="eager", dynamic=False)(*pair), reference(*pair)
    torch._dynamo.reset()
    assert not any("pool_" in name for name, _ in fast.named_buffers())
    _assert_same_outputs({n: t.numpy() for n, t in zip(OUTPUT_NAMES, got)},
                         {n: t.numpy() for n, t in zip(OUTPUT_NAMES, want)})


def test_cached_operators_stay_out_of_checkpoints_and_work_after_inference_mode() -> None:
    """Per-size operators are non-persistent buffers: checkpoints keep their keys, and a map size
    first seen under inference_mode (an evaluation) still trains and exports afterwards."""
    cfg = DMSNetConfig.tiny(image_size=112)
    fast, reference = _twins(cfg)
    pair = _pair(cfg)
    with torch.inference_mode():
        fast.eval()(*pair)
    assert any(name.endswith("pool_7x7") for name, _ in fast.named_buffers())
    assert fast.state_dict().keys() == reference.state_dict().keys()
    logits = fast.train()(*pair)[0]
    logits.sum().backward()  # would fail on inference tensors
    assert fast.multiscale_left.compress[0].weight.grad is not None


def test_autocast_keeps_the_cached_operators_in_fp32() -> None:
    cfg = DMSNetConfig.tiny(image_size=112)
    fast, _ = _twins(cfg)
    pair = _pair(cfg)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast.eval()(*pair)
    assert fast.multiscale_left.compress[0].pool_7x7.dtype == torch.float32  # 1/49 not kept rounded to bf16
