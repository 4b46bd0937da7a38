"""The exam pipeline (`dms_net_core.exam_pipeline`) on real photographs and a real exported
model through ONNX Runtime: the one sequence the node, `dms-net-bag evaluate` and `dms-net-eval`
run, step for step equal to its parts, with every bad input ending in a result, never a raise."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from dms_net_core.bundle import ModelBundle
from dms_net_core.data.odir import load_odir
from dms_net_core.data.preprocess import load_rgb, prepare_eye_uint8
from dms_net_core.data.quality import assess_quality
from dms_net_core.exam_pipeline import ExamPipeline, ExamSettings, ExamStatus, EyeError
from dms_net_core.postprocess import decide
from dms_net_core.runtime import create_backend
from test.fakes.tiny_bundle import tiny_bundle_path
from test.odir_data import SUBSET_DIR


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> ModelBundle:
    return ModelBundle.load(tiny_bundle_path(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def backend(bundle):
    be = create_backend(bundle, backend="onnxruntime", device="cpu")
    yield be
    be.close()


@pytest.fixture(scope="module")
def eyes() -> list[tuple[str, np.ndarray, np.ndarray]]:
    recs = [r for r in load_odir(SUBSET_DIR / "labels.csv").records if r.has_both][:6]
    return [(r.patient_id, load_rgb(r.left_path), load_rgb(r.right_path)) for r in recs]


def _camera_frame(rgb: np.ndarray) -> np.ndarray:
    disc = cv2.resize(rgb, (1490, 1490), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(disc, 23, 23, 279, 279, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def test_one_pair_is_its_steps_in_sequence(bundle, backend, eyes):
    pipeline = ExamPipeline.for_bundle(bundle, backend)
    _, left, right = eyes[0]
    for lrgb, rrgb in ((left, right), (_camera_frame(left), _camera_frame(right))):
        result = pipeline.examine(lrgb, rrgb)
        assert result.status is ExamStatus.OK and result.message == "ok"
        want_l, want_r = prepare_eye_uint8(lrgb, bundle.preprocess), prepare_eye_uint8(rrgb, bundle.preprocess)
        np.testing.assert_array_equal(result.left.image, want_l)
        np.testing.assert_array_equal(result.right.image, want_r)
        assert result.left_quality.measures == assess_quality(lrgb).measures
        want = backend.infer(want_l[None], want_r[None])
        np.testing.assert_array_equal(result.probabilities, want.probabilities[0])
        np.testing.assert_array_equal(result.attention_left, want.attention_left[0, 0])
        assert result.decision.positive.tolist() == decide(want.probabilities[0], bundle.thresholds).positive.tolist()
        assert result.left_probabilities is None  # this model has no per-eye heads
        assert {"preprocess", "inference"} <= set(result.timings_ms)


def test_batches_give_what_single_pairs_give_in_input_order(bundle, backend, eyes):
    pipeline = ExamPipeline.for_bundle(bundle, backend)
    black = np.zeros_like(eyes[0][1])
    items = [(pid, left, right) for pid, left, right in eyes]
    items.insert(2, ("bad", EyeError("empty image: check the driver"), eyes[0][2]))
    items.insert(4, ("dark", black, eyes[1][2]))
    got = list(pipeline.examine_all(items, batch_size=4))
    assert [tag for tag, _ in got] == [tag for tag, _, _ in items]
    for (tag, left, right), (_, result) in zip(items, got):
        single = pipeline.examine(left, right)
        assert result.status is single.status and result.message == single.message, tag
        if single.probabilities is None:
            assert result.probabilities is None
        else:
            np.testing.assert_allclose(result.probabilities, single.probabilities, atol=1e-6)
    by_tag = dict(got)
    assert (by_tag["bad"].status is ExamStatus.ERROR
            and by_tag["bad"].message == "left eye: empty image: check the driver")
    assert by_tag["dark"].status is ExamStatus.UNGRADABLE and by_tag["dark"].probabilities is None
    assert by_tag["dark"].message.startswith("left eye image ungradable (left: ") and "retake" in by_tag["dark"].message


def test_offline_qa_infers_what_the_gate_withheld_and_keeps_the_status(bundle, backend, eyes):
    black = np.zeros_like(eyes[0][1])
    node = ExamPipeline.for_bundle(bundle, backend)
    qa = ExamPipeline.for_bundle(bundle, backend, infer_ungradable=True)
    withheld, inferred = node.examine(black, eyes[0][2]), qa.examine(black, eyes[0][2])
    assert withheld.status is inferred.status is ExamStatus.UNGRADABLE and withheld.message == inferred.message
    assert withheld.probabilities is None and withheld.left.image is None
    want = backend.infer(prepare_eye_uint8(black, bundle.preprocess)[None],
                         prepare_eye_uint8(eyes[0][2], bundle.preprocess)[None])
    np.testing.assert_array_equal(inferred.probabilities, want.probabilities[0])


def test_quality_settings(bundle, backend, eyes):
    _, left, right = eyes[0]
    strict = ExamPipeline.for_bundle(bundle, backend, ExamSettings(quality_min_score=1.01)).examine(left, right)
    assert strict.status is ExamStatus.UNGRADABLE and "below quality_min_score 1.01" in strict.message
    off = ExamPipeline.for_bundle(bundle, backend, ExamSettings(quality_gate=False)).examine(np.zeros_like(left), right)
    assert off.status is ExamStatus.OK and off.left_quality is None and off.right_quality is None


def test_a_float32_only_backend_gets_the_same_numbers_normalised(bundle, backend, eyes):
    class Float32Only:
        input_forms = ("float32",)

        def infer(self, left, right):
            assert left.dtype == np.float32 and left.shape[1] == 3
            return backend.infer(left, right)

    _, left, right = eyes[0]
    a = ExamPipeline.for_bundle(bundle, backend).examine(left, right)
    b = ExamPipeline.for_bundle(bundle, Float32Only()).examine(left, right)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_a_failing_backend_is_an_error_result_for_its_batch(bundle, backend, eyes):
    class Broken:
        input_forms = ("uint8", "float32")

        def infer(self, left, right):
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nstack...")

    pipeline = ExamPipeline.for_bundle(bundle, Broken())
    got = list(pipeline.examine_all([(i, left, right) for i, (_, left, right) in enumerate(eyes[:3])], batch_size=2))
    assert [r.status for _, r in got] == [ExamStatus.ERROR] * 3
    assert got[0][1].message == ("inference failed (RuntimeError: CUDA error: an illegal memory access was "
                                 "encountered): check the bundle and backend")
    assert got[0][1].left_quality.gradable  # graded before the failure


def test_settings_are_frozen_values():
    s = ExamSettings()
    assert replace(s, quality_gate=False) != s and s.quality_gate and s.quality_min_score == 0.0


def test_examine_prepared_is_the_node_sequence_with_its_stage_hook(bundle, backend, eyes):
    """The node's path: a gradable pair calls the hook once, then infers (what `examine`
    gives); a hook that says stop (a cancelled goal) costs no inference; an ungradable pair
    never reaches the hook."""
    pipeline = ExamPipeline.for_bundle(bundle, backend)
    _, left, right = eyes[0]
    calls: list[str] = []
    prepared = pipeline.prepare_eye(left), pipeline.prepare_eye(right)
    result = pipeline.examine_prepared(*prepared, before_inference=lambda: calls.append("inferring") or True)
    assert calls == ["inferring"] and result.status is ExamStatus.OK
    np.testing.assert_array_equal(result.probabilities, pipeline.examine(left, right).probabilities)
    assert pipeline.examine_prepared(*prepared, before_inference=lambda: False) is None
    dark = pipeline.prepare_eye(np.zeros_like(left)), prepared[1]
    calls.clear()
    withheld = pipeline.examine_prepared(*dark, before_inference=lambda: calls.append("inferring") or True)
    assert withheld.status is ExamStatus.UNGRADABLE and calls == []


def test_product_code_never_sequences_an_exam_itself():
    """Only the pipeline calls its own steps: the node and the tools ask it for the exam."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    step_call = re.compile(r"\.verdict\(|pipeline\.infer\(")
    offenders = [f"{path.relative_to(repo)}:{n}" for folder in ("dms_net_ros", "dms_net_core", "training", "scripts")
                 for path in (repo / folder).rglob("*.py") if path.name != "exam_pipeline.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if step_call.search(line)]
    assert not offenders, offenders
