"""Per-eye heads end to end, without ROS: the model's per-eye outputs, the trainer's masked
per-eye loss, the exported bundle (ONNX Runtime, PyTorch and the TensorRT test double agree
with eager PyTorch on real fundus photographs shipped in the repository), ensembles, the
"which eye" rule, and the per-eye AUC in ``dms-net-eval``'s report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.bundle import EYE_OUTPUT_NAMES, OUTPUT_NAMES, ModelBundle
from dms_net_core.bundle_export import export_bundle
from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, prepare_eye_uint8
from dms_net_core.model import DMSNetConfig, build_model
from dms_net_core.postprocess import decide, finding_eyes
from dms_net_core.runtime import create_backend

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "demo" / "samples"


def _samples() -> list[dict[str, str]]:
    with open(SAMPLES / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def _prepared(size: int, rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Real demo eyes, prepared as the node hands them to a backend (uint8 [B,S,S,3])."""
    cfg = PreprocessConfig(image_size=size)
    left = np.stack([prepare_eye_uint8(load_rgb(str(SAMPLES / r["left_file"])), cfg) for r in rows])
    right = np.stack([prepare_eye_uint8(load_rgb(str(SAMPLES / r["right_file"])), cfg) for r in rows])
    return left, right


def _per_eye_model(architecture: str = "dms_net", seed: int = 0) -> tuple[torch.nn.Module, DMSNetConfig]:
    torch.manual_seed(seed)
    cfg = DMSNetConfig.tiny(architecture=architecture, per_eye_heads=True)
    model = build_model(cfg).eval()
    with torch.no_grad():  # spread the probabilities so agreement checks are not all ~0.5
        model.classifier.weight.mul_(40.0)
        model.eye_classifier.weight.mul_(40.0)
    return model, cfg


@pytest.fixture(scope="module")
def per_eye_bundle(tmp_path_factory) -> ModelBundle:
    model, cfg = _per_eye_model()
    out = tmp_path_factory.mktemp("per_eye") / "bundle"
    return export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), out,
                         thresholds=np.full(8, 0.5, np.float32), name="tiny-per-eye")


@pytest.mark.parametrize("architecture", ["dms_net", "plain_binocular"])
def test_per_eye_heads_add_two_outputs_and_default_models_keep_three(architecture: str) -> None:
    model, cfg = _per_eye_model(architecture)
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(left, right)
        swapped = model(right, left)
    assert len(out) == 5 and out[3].shape == out[4].shape == (2, 8)
    # one classifier shared by both eyes, each eye's logits from that eye only (plain model:
    # its features are the siamese backbone's, so swapping the eyes swaps the per-eye outputs)
    if architecture == "plain_binocular":
        torch.testing.assert_close(swapped[3], out[4])
        torch.testing.assert_close(swapped[4], out[3])
    plain = build_model(DMSNetConfig.tiny(architecture=architecture)).eval()
    assert len(plain(left, right)) == 3 and not hasattr(plain, "eye_classifier") or plain.eye_classifier is None


def test_masked_eye_loss_ignores_eyes_without_a_label() -> None:
    from training.train import masked_eye_loss

    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(8))
    logits_l, logits_r = torch.zeros(2, 8), torch.full((2, 8), 5.0)
    eyes = {"eye_left": torch.zeros(2, 8, dtype=torch.uint8), "eye_right": torch.zeros(2, 8, dtype=torch.uint8),
            "eye_known": torch.tensor([[True, False], [True, False]])}
    # only the left eyes (logit 0, target 0) count: BCE = log 2; the confident wrong right eyes are masked
    assert masked_eye_loss(criterion, logits_l, logits_r, eyes).item() == pytest.approx(np.log(2), rel=1e-6)
    eyes["eye_known"][:] = False
    assert masked_eye_loss(criterion, logits_l, logits_r, eyes).item() == 0.0


def test_bundle_declares_and_backends_return_per_eye_probabilities(per_eye_bundle: ModelBundle) -> None:
    import onnx

    assert per_eye_bundle.output_names == OUTPUT_NAMES + EYE_OUTPUT_NAMES
    graph = onnx.load(str(per_eye_bundle.onnx_path)).graph
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES + EYE_OUTPUT_NAMES)
    meta = json.loads((per_eye_bundle.path / "model.json").read_text())
    assert meta["outputs"]["left_logits"] == [-1, 8] and meta["model_config"]["per_eye_heads"] is True

    rows = _samples()[:4]
    left, right = _prepared(per_eye_bundle.image_size, rows)
    model, _ = _per_eye_model()
    with torch.no_grad():
        from dms_net_core.runtime.inputs import float_pair

        fl, fr = float_pair(left, right, per_eye_bundle.preprocess)
        ref = [torch.sigmoid(t).numpy() for t in model(torch.from_numpy(fl), torch.from_numpy(fr))[3:]]
    assert np.ptp(ref[0]) > 0.2  # real images give spread-out per-eye probabilities
    for name in ("onnxruntime", "torch"):
        backend = create_backend(per_eye_bundle, backend=name, device="cpu")
        got = backend.infer(left, right)
        np.testing.assert_allclose(got.left_probabilities, ref[0], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got.right_probabilities, ref[1], atol=1e-4, err_msg=name)
        backend.close()


def test_tensorrt_double_returns_per_eye_probabilities(per_eye_bundle: ModelBundle, tmp_path, monkeypatch) -> None:
    """TensorRT has only run against the test double here (no registry serves its builder)."""
    import shutil

    from dms_net_core.runtime.tensorrt_backend import TensorRTBackend
    from test.fakes import fake_tensorrt

    fake_tensorrt.install(monkeypatch)
    bundle = ModelBundle.load(shutil.copytree(per_eye_bundle.path, tmp_path / "bundle"))
    left, right = _prepared(bundle.image_size, _samples()[:2])
    want = create_backend(bundle, backend="onnxruntime", device="cpu").infer(left, right)
    backend = TensorRTBackend(bundle, max_batch=2)
    got = backend.infer(left, right)
    np.testing.assert_allclose(got.left_probabilities, want.left_probabilities, atol=1e-5)
    np.testing.assert_allclose(got.right_probabilities, want.right_probabilities, atol=1e-5)
    backend.close()


def test_ensemble_averages_per_eye_probabilities_of_the_members_that_have_them() -> None:
    from dms_net_core.model.ensemble import EnsembleNet

    a, _ = _per_eye_model(seed=1)
    b, _ = _per_eye_model("plain_binocular", seed=2)
    c = build_model(DMSNetConfig.tiny()).eval()  # no per-eye heads: left out of the per-eye mean
    ens = EnsembleNet([a, b, c], per_eye=True).eval()
    left, right = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ens(left, right)
        want = (torch.sigmoid(a(left, right)[3]) + torch.sigmoid(b(left, right)[3])) / 2
    assert len(out) == 5
    torch.testing.assert_close(torch.sigmoid(out[3]), want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no member has per-eye heads"):
        EnsembleNet([c, c], per_eye=True)(left, right)


def test_finding_eyes_names_a_side_for_every_positive() -> None:
    t = np.full(8, 0.5, np.float32)
    d = decide(np.array([0.1, 0.9, 0.1, 0.8, 0.1, 0.1, 0.6, 0.1], np.float32), t)
    left = np.array([0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.3, 0.1], np.float32)   # D left; M only combined
    right = np.array([0.1, 0.7, 0.1, 0.9, 0.1, 0.1, 0.4, 0.1], np.float32)  # D and C right
    assert d.positive_codes == ["D", "C", "M"]
    assert finding_eyes(d, left, right) == ["both", "right", "right"]  # M: neither passes alone -> the likelier eye
    assert finding_eyes(d, None, None) == ["", "", ""]
    normal = decide(np.array([0.9] + [0.1] * 7, np.float32), t)
    assert finding_eyes(normal, left, right) == ["both"]


def test_dms_net_eval_reports_per_eye_auc_on_real_images(per_eye_bundle: ModelBundle, tmp_path) -> None:
    from training.evaluate import main

    report = main(["--model", str(per_eye_bundle.path), "--labels", str(SAMPLES / "labels.csv"),
                   "--output-dir", str(tmp_path / "eval"), "--no-plots"])
    per_eye = report["per_eye"]
    assert per_eye["eyes"] == 16 and set(per_eye["per_class"]) == set(CLASS_CODES)
    assert 0.0 <= per_eye["auc"] <= 1.0
    assert "Per eye" in (tmp_path / "eval" / "report.md").read_text()
    saved = np.load(tmp_path / "eval" / "eye_probs.npz")
    assert saved["probs_left"].shape == (8, 8) and saved["labels_left_known"].all()


def test_trainer_learns_per_eye_heads_on_real_pairs(tmp_path) -> None:
    """A tiny per-eye model trained on the shipped real subset: the checkpoint carries the
    per-eye AUC on validation and held-out test, and the per-eye arrays are saved for ensembles."""
    from test.odir_data import SUBSET_LABELS, SUBSET_SPLIT3
    from training.train import main

    res = main(["--config", "tiny_cpu", "--labels", str(SUBSET_LABELS), "--split-file", str(SUBSET_SPLIT3),
                "--model", "per_eye_heads=true", "--frozen-stages", "1", "--epochs", "2",
                "--output-dir", str(tmp_path)])
    ckpt = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_config"]["per_eye_heads"] is True and "eye_classifier.weight" in ckpt["model"]
    for report in (ckpt["metrics"], ckpt["metrics"]["held_out_test"]):
        assert report["per_eye"]["eyes"] > 0 and 0.0 <= report["per_eye"]["auc"] <= 1.0
    assert 0.0 <= ckpt["history"][-1]["val_eye_auc"] <= 1.0
    saved = np.load(tmp_path / "test_eye.npz")
    assert saved["probs_left"].shape[1] == 8 and saved["labels_left_known"].dtype == bool
    assert res["test"]["final"] > 0 and ckpt["args"]["frozen_stages"] == 1
    # --frozen-stages 1: the stem and the first stage kept their initial weights and BN statistics
    torch.manual_seed(0)
    initial = build_model(DMSNetConfig.from_dict(ckpt["model_config"])).state_dict()
    frozen = [k for k in initial if k.startswith(("backbone.0.", "backbone.1."))]
    moved = [k for k in initial if k.startswith("backbone.2.") and initial[k].is_floating_point()
             and not torch.equal(initial[k], ckpt["model"][k])]
    assert frozen and all(torch.equal(initial[k], ckpt["model"][k]) for k in frozen)
    assert moved  # the next stage trained


def test_bag_evaluation_reports_per_eye_auc_from_the_sidecar_keywords(per_eye_bundle: ModelBundle, tmp_path) -> None:
    from dms_net_core.data.odir import load_odir
    from dms_net_ros.bag.evaluate import evaluate_bag, write_outputs
    from dms_net_ros.bag.make import make_bag
    from dms_net_ros.bag.pair_results import read_pairs_csv

    records = load_odir(SAMPLES / "labels.csv").records
    bag = make_bag(records, tmp_path / "bag").bag
    backend = create_backend(per_eye_bundle, backend="onnxruntime", device="cpu")
    evaluation = evaluate_bag(bag, per_eye_bundle, backend)
    summary = write_outputs(evaluation, tmp_path / "eval", per_eye_bundle.thresholds)
    assert summary["report"]["per_eye"]["eyes"] == 16
    rows = read_pairs_csv(tmp_path / "eval" / "pairs.csv")
    left, right = _prepared(per_eye_bundle.image_size, _samples())
    want = backend.infer(left, right)
    by_id = {r.patient_id: r for r in rows}
    for i, row in enumerate(_samples()):
        np.testing.assert_allclose(by_id[row["patient_id"]].left_probabilities, want.left_probabilities[i], atol=1e-5)
