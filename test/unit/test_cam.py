"""Class activation maps of the plain per-eye model, end to end without ROS: the maps are the
per-eye head applied at every position of the eye's feature map; export adds them to the
ONNX graph (ONNX Runtime, PyTorch and the TensorRT test double agree on real photographs);
mirror TTA and ensembles average them; bundles without them (older exports, DMS-Net) load and
run as before; the exam pipeline picks each eye's evidence map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.bundle import CAM_OUTPUT_NAMES, EYE_OUTPUT_NAMES, OUTPUT_NAMES, BundleError, ModelBundle
from dms_net_core.bundle_export import export_bundle
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.runtime import create_backend
from dms_net_core.runtime.inputs import float_pair
from test.fakes.tiny_bundle import real_prepared_pair_batch

REPO = Path(__file__).resolve().parents[2]


def _plain_per_eye(seed: int = 0) -> tuple[torch.nn.Module, DMSNetConfig]:
    torch.manual_seed(seed)
    cfg = DMSNetConfig.tiny(architecture="plain_binocular", per_eye_heads=True)
    model = build_model(cfg).eval()
    with torch.no_grad():  # spread the probabilities (a random tiny head gives ~0.5 everywhere)
        model.classifier.weight.mul_(40.0)
        model.eye_classifier.weight.mul_(40.0)
        model.eye_classifier.bias.uniform_(-1.0, 1.0)  # a non-zero bias, so the bias convention is tested
    return model, cfg


def _export(model: torch.nn.Module, cfg: DMSNetConfig, out: Path, **kwargs) -> ModelBundle:
    return export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), out,
                         thresholds=np.full(8, 0.5, np.float32), name="tiny-cam", **kwargs)


@pytest.fixture(scope="module")
def cam_model() -> tuple[torch.nn.Module, DMSNetConfig]:
    return _plain_per_eye()


@pytest.fixture(scope="module")
def cam_bundle(cam_model, tmp_path_factory) -> ModelBundle:
    return _export(*cam_model, tmp_path_factory.mktemp("cam") / "bundle")


@pytest.fixture(scope="module")
def real_pair(cam_bundle) -> tuple[np.ndarray, np.ndarray]:
    return real_prepared_pair_batch(cam_bundle.image_size)


def _eager(model: torch.nn.Module, bundle: ModelBundle, left: np.ndarray,
           right: np.ndarray) -> tuple[torch.Tensor, ...]:
    fl, fr = float_pair(left, right, bundle.preprocess)
    with torch.inference_mode():
        return model(torch.from_numpy(fl), torch.from_numpy(fr), with_cams=True)


def _assert_maps_close(got: np.ndarray, want: np.ndarray, name: str = "") -> None:
    scale = float(np.abs(want).max())
    assert scale > 0.1, name  # maps with something in them
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0, err_msg=name)


# -- the model -------------------------------------------------------------------------------------
def test_cam_is_the_per_eye_head_applied_at_every_position(cam_model):
    model, _ = cam_model
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        default = model(left, right)
        out = model(left, right, with_cams=True)
        features = model.backbone(torch.cat([left, right]))
    assert len(default) == 5 and len(out) == 7  # the default forward (training, evaluation) is unchanged
    for a, b in zip(default, out[:5]):
        torch.testing.assert_close(a, b)
    cam_left, cam_right = out[5:]
    assert cam_left.shape == (2, 8, *features.shape[-2:])
    for cams, feats in ((cam_left, features[:2]), (cam_right, features[2:])):
        h, w = feats.shape[-2:]
        per_position = model.eye_classifier(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]))  # W f(x,y) + b
        torch.testing.assert_close(cams.permute(0, 2, 3, 1).reshape(-1, 8), per_position, atol=1e-5, rtol=1e-5)
    # bias included: the spatial mean of each class map is the eye's logit (head on the pooled features)
    torch.testing.assert_close(cam_left.mean(dim=(2, 3)), out[3], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(cam_right.mean(dim=(2, 3)), out[4], atol=1e-4, rtol=1e-5)


def test_models_without_per_eye_linear_heads_provide_no_cams():
    plain = build_model(DMSNetConfig.tiny(architecture="plain_binocular")).eval()
    dms = build_model(DMSNetConfig.tiny(per_eye_heads=True)).eval()
    assert not plain.provides_cams and not getattr(dms, "provides_cams", False)
    with pytest.raises(ValueError, match="per_eye_heads=True"):
        plain(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), with_cams=True)


def test_mirror_tta_unflips_the_mirrored_maps_before_averaging(cam_model):
    from dms_net_core.model.tta import HorizontalFlipTTA

    model, _ = cam_model
    left, right = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        plain = model(left, right, with_cams=True)
        mirrored = model(left.flip(-1), right.flip(-1), with_cams=True)
        tta = HorizontalFlipTTA(model)
        wrapped = tta(left, right, with_cams=True)
        without = tta(left, right)
    assert tta.provides_cams and len(wrapped) == 7 and len(without) == 5
    for i in (5, 6):
        torch.testing.assert_close(wrapped[i], (plain[i] + mirrored[i].flip(-1)) / 2)
    for a, b in zip(without, wrapped[:5]):  # the probabilities are TTA's as before
        torch.testing.assert_close(a, b)


def test_ensemble_averages_the_maps_of_the_members_that_have_them(cam_model):
    from dms_net_core.model.ensemble import EnsembleNet

    a, _ = cam_model
    b, _ = _plain_per_eye(seed=3)
    c = build_model(DMSNetConfig.tiny(per_eye_heads=True)).eval()  # DMS-Net: per-eye logits, no CAMs
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    ens = EnsembleNet([a, b, c], per_eye=True).eval()
    with torch.inference_mode():
        out = ens(left, right, with_cams=True)
        want = [(x + y) / 2 for x, y in zip(a(left, right, with_cams=True)[5:], b(left, right, with_cams=True)[5:])]
        default = ens(left, right)
    assert ens.provides_cams and len(out) == 7 and len(default) == 5
    torch.testing.assert_close(out[5], want[0])
    torch.testing.assert_close(out[6], want[1])
    assert not EnsembleNet([c, c], per_eye=True).provides_cams


# -- the bundle and the backends ---------------------------------------------------------------
def test_plain_per_eye_export_adds_cam_outputs(cam_bundle):
    import onnx

    names = OUTPUT_NAMES + EYE_OUTPUT_NAMES + CAM_OUTPUT_NAMES
    assert cam_bundle.has_cams and cam_bundle.output_names == names
    assert [o.name for o in onnx.load(str(cam_bundle.onnx_path)).graph.output] == list(names)
    meta = json.loads((cam_bundle.path / "model.json").read_text())
    assert meta["outputs"]["cam_left"] == meta["outputs"]["cam_right"] == [-1, 8, 4, 4]
    assert meta["export"]["onnx_check_cam_max_rel_diff"] < 1e-3


@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch"])
def test_backends_return_the_eager_cams_on_real_images(cam_model, cam_bundle, real_pair, backend_name):
    model, _ = cam_model
    want = _eager(model, cam_bundle, *real_pair)
    backend = create_backend(cam_bundle, backend=backend_name, device="cpu")
    got = backend.infer(*real_pair)
    assert got.cam_left.shape == (2, 8, 4, 4) and got.cam_left.dtype == np.float32
    _assert_maps_close(got.cam_left, want[5].numpy(), backend_name)
    _assert_maps_close(got.cam_right, want[6].numpy(), backend_name)
    np.testing.assert_allclose(got.left_probabilities, torch.sigmoid(want[3]).numpy(), atol=1e-4)
    backend.close()


def test_torch_backend_without_attention_outputs_leaves_the_cams_out(cam_bundle, real_pair):
    full = create_backend(cam_bundle, backend="torch", device="cpu").infer(*real_pair)
    bare = create_backend(cam_bundle, backend="torch", device="cpu", attention_outputs=False).infer(*real_pair)
    assert bare.cam_left is None and bare.cam_right is None and bare.attention_left is None
    np.testing.assert_allclose(bare.probabilities, full.probabilities, atol=1e-6)
    np.testing.assert_allclose(bare.left_probabilities, full.left_probabilities, atol=1e-6)


def test_tensorrt_double_returns_the_cams(cam_bundle, real_pair, tmp_path, monkeypatch):
    """TensorRT 10 named-tensor path, run against the test double (no TensorRT on this machine)."""
    from dms_net_core.runtime.tensorrt_backend import TensorRTBackend
    from test.fakes import fake_tensorrt

    fake_tensorrt.install(monkeypatch)
    bundle = ModelBundle.load(shutil.copytree(cam_bundle.path, tmp_path / "bundle"))
    want = create_backend(bundle, backend="onnxruntime", device="cpu").infer(*real_pair)
    backend = TensorRTBackend(bundle, max_batch=2)
    got = backend.infer(*real_pair)
    _assert_maps_close(got.cam_left, want.cam_left, "left")
    _assert_maps_close(got.cam_right, want.cam_right, "right")
    backend.close()


def test_unpack_outputs_splits_the_cams_after_the_attention_maps():
    from dms_net_core.runtime.torch_serving import unpack_outputs

    area, k = 4, 8
    width = 3 * k + 2 * area + 2 * k * area
    packed = np.arange(2 * width, dtype=np.float32).reshape(2, -1)
    out = unpack_outputs(packed, k, per_eye=True, cams=True)
    start = 3 * k + 2 * area
    assert out["attention_right"].shape == (2, 1, 2, 2) and out["attention_right"][0, 0, 1, 1] == start - 1
    assert out["cam_left"].shape == out["cam_right"].shape == (2, k, 2, 2)
    assert out["cam_left"][0, 0, 0, 0] == start and out["cam_left"][0, 1, 0, 0] == start + area
    assert out["cam_right"][1, k - 1, 1, 1] == packed[1, -1]
    with pytest.raises(RuntimeError, match="class activation maps: the model does not fit its bundle"):
        unpack_outputs(packed[:, :-1], k, per_eye=True, cams=True)


def test_bundles_without_cams_still_load_and_run(cam_model, tmp_path, real_pair):
    """A plain per-eye bundle exported before CAMs existed has the same model_config and no CAM
    outputs (cams=False writes exactly that graph); so does every DMS-Net bundle."""
    model, cfg = cam_model
    old = _export(model, cfg, tmp_path / "old", cams=False)
    dms_cfg = DMSNetConfig.tiny(per_eye_heads=True)
    dms = _export(build_model(dms_cfg).eval(), dms_cfg, tmp_path / "dms")
    for bundle in (old, dms):
        assert not bundle.has_cams and bundle.output_names == OUTPUT_NAMES + EYE_OUTPUT_NAMES
        for name in ("onnxruntime", "torch"):
            got = create_backend(bundle, backend=name, device="cpu").infer(*real_pair)
            assert got.cam_left is None and got.cam_right is None and got.left_probabilities.shape == (2, 8)
    with pytest.raises(BundleError, match="no class activation maps"):
        _export(build_model(dms_cfg).eval(), dms_cfg, tmp_path / "refused", cams=True)


def test_the_shipped_demo_bundle_gives_cams_whose_means_are_its_eye_logits():
    """models/demo got its maps from scripts/graft_cams.py (its checkpoints predate CAM export)."""
    demo = ModelBundle.load(REPO / "models" / "demo")
    assert demo.has_cams
    got = create_backend(demo, backend="onnxruntime", device="cpu").infer(*real_prepared_pair_batch(demo.image_size))
    assert got.cam_left.shape == got.cam_right.shape == (2, 8, 8, 8) and got.left_probabilities.shape == (2, 8)
    assert np.isfinite(got.cam_left).all() and float(np.abs(got.cam_left).max()) > 0.1


def test_grafted_cams_equal_the_exported_ones(tmp_path, real_pair):
    """scripts/graft_cams.py on a mirror-averaged ensemble exported without maps gives the maps
    the exporter writes for the same ensemble."""
    import importlib.util

    from dms_net_core.model.ensemble import EnsembleNet
    from dms_net_core.model.tta import HorizontalFlipTTA

    spec = importlib.util.spec_from_file_location("graft_cams", REPO / "scripts" / "graft_cams.py")
    graft_cams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graft_cams)
    (m0, cfg), (m1, _) = _plain_per_eye(0), _plain_per_eye(1)
    ensemble = EnsembleNet([HorizontalFlipTTA(m0), HorizontalFlipTTA(m1)], per_eye=True).eval()
    with_maps = _export(ensemble, cfg, tmp_path / "with", cams=True)
    without = _export(ensemble, cfg, tmp_path / "without", cams=False)
    assert not without.has_cams
    assert graft_cams.main([str(without.path)]) == 0
    grafted = ModelBundle.load(without.path)
    assert grafted.has_cams
    want = create_backend(with_maps, backend="onnxruntime", device="cpu").infer(*real_pair)
    got = create_backend(grafted, backend="onnxruntime", device="cpu").infer(*real_pair)
    _assert_maps_close(got.cam_left, want.cam_left, "left")
    _assert_maps_close(got.cam_right, want.cam_right, "right")
    np.testing.assert_array_equal(got.probabilities, want.probabilities)


def test_a_model_json_naming_one_cam_output_is_refused(cam_bundle, tmp_path):
    bundle = shutil.copytree(cam_bundle.path, tmp_path / "bundle")
    meta = json.loads((bundle / "model.json").read_text())
    del meta["outputs"]["cam_right"]
    (bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="class activation maps"):
        ModelBundle.load(bundle)


def test_ensemble_exported_from_checkpoints_has_the_members_mirror_averaged_cams(tmp_path, capsys, real_pair):
    """dms-net-ensemble --hflip-tta on two plain per-eye checkpoints: the bundle's CAMs are the mean
    over members x {pair, mirrored pair with its maps flipped back}."""
    from dms_net_core.checkpoint import make_checkpoint
    from training.ensemble import main

    paths, models = [], []
    for seed in (0, 1):
        model, cfg = _plain_per_eye(seed)
        path = tmp_path / f"member{seed}.pt"
        torch.save(make_checkpoint(model.state_dict(), cfg, PreprocessConfig(image_size=cfg.image_size), metrics={},
                                   data_summary={}, epoch=1, step=1, args={"seed": seed}), path)
        paths.append(str(path))
        models.append(model)
    out = tmp_path / "ens"
    assert main([*paths, "--output", str(out), "--no-tune", "--hflip-tta"]) == 0
    assert "class activation maps (cam_left/cam_right)" in capsys.readouterr().out
    bundle = ModelBundle.load(out)
    assert bundle.has_cams and "un-flipped" in bundle.meta["ensemble"]["class_activation_maps"]
    left, right = real_pair
    want = [[], []]
    for model in models:
        plain = _eager(model, bundle, left, right)
        # [B,S,S,3]: width is axis 2
        mirrored = _eager(model, bundle, left[:, :, ::-1].copy(), right[:, :, ::-1].copy())
        for i in (0, 1):
            want[i].append((plain[5 + i] + mirrored[5 + i].flip(-1)).numpy() / 2)
    got = create_backend(bundle, backend="onnxruntime", device="cpu").infer(left, right)
    _assert_maps_close(got.cam_left, np.mean(want[0], axis=0), "left")
    _assert_maps_close(got.cam_right, np.mean(want[1], axis=0), "right")


# -- the evidence an overlay shows -----------------------------------------------------------------
def test_evidence_is_the_eyes_strongest_positive_finding_else_its_top_class():
    from dms_net_core.evidence import evidence_maps, normalised
    from dms_net_core.postprocess import decide

    cams = np.stack([np.full((2, 2), float(k)) for k in range(8)]).astype(np.float32)
    cams[:, 0, 0] += 5.0  # every class map peaks at (0, 0)
    t = np.full(8, 0.5, np.float32)
    decision = decide(np.array([0.1, 0.9, 0.1, 0.8, 0.1, 0.1, 0.6, 0.1], np.float32), t)  # D, C, M positive
    left = np.array([0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.3, 0.1], np.float32)   # D on the left
    right = np.array([0.1, 0.7, 0.1, 0.9, 0.1, 0.1, 0.4, 0.1], np.float32)  # D and C on the right, C stronger
    ev_left, ev_right = evidence_maps(cams, cams + 1, left, right, decision)
    assert (ev_left.class_index, ev_left.positive) == (1, True)
    assert (ev_right.class_index, ev_right.positive) == (3, True)
    assert ev_left.heatmap.dtype == np.float32 and ev_left.heatmap.max() == 1.0 and ev_left.heatmap.min() == 0.0
    normal = decide(np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32), t)  # no disease finding
    top = np.array([0.2, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1], np.float32)
    ev_left, _ = evidence_maps(cams, cams, top, top, normal)
    assert (ev_left.class_index, ev_left.positive) == (4, False)
    assert evidence_maps(cams, cams, top, right, None)[1].class_index == 3  # no thresholds: the top class
    np.testing.assert_array_equal(normalised(np.ones((3, 3))), np.zeros((3, 3)))


def test_exam_pipeline_carries_cams_and_each_eyes_evidence_on_real_photographs(cam_bundle):
    from dms_net_core.data.preprocess import load_rgb
    from dms_net_core.evidence import evidence_maps
    from dms_net_core.exam_pipeline import ExamPipeline, ExamSettings, ExamStatus
    from test.fakes.tiny_bundle import DATA_DIR, REAL_PAIRS

    backend = create_backend(cam_bundle, backend="onnxruntime", device="cpu")
    pipeline = ExamPipeline.for_bundle(cam_bundle, backend, ExamSettings(quality_gate=False))
    lf, rf = REAL_PAIRS[0]
    result = pipeline.examine(load_rgb(str(DATA_DIR / "images" / lf)), load_rgb(str(DATA_DIR / "images" / rf)))
    assert result.status is ExamStatus.OK and result.cam_left.shape == (8, 4, 4)
    want = evidence_maps(result.cam_left, result.cam_right, result.left_probabilities, result.right_probabilities,
                         result.decision)
    for got, expected in zip((result.evidence_left, result.evidence_right), want):
        assert got.class_index == expected.class_index and np.array_equal(got.heatmap, expected.heatmap)
    assert 0.0 <= result.evidence_left.heatmap.min() and result.evidence_left.heatmap.max() <= 1.0
