"""DiagnosisResult building, /diagnostics content and the parameter file (no processes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from test.ros.harness import require_ros

require_ros()

from dms_net_core.classes import CLASS_CODES, CLASS_NAMES  # noqa: E402
from dms_net_core.data.quality import QualityReport  # noqa: E402
from dms_net_core.postprocess import decide  # noqa: E402
from dms_net_ros.diagnostics import PipelineStats, diagnostic_values, to_diagnostic_array  # noqa: E402
from dms_net_ros.messages import ResultContext, error_result, ok_result, summarize, ungradable_result  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _ctx(**kw) -> ResultContext:
    base = dict(exam_id="E1", left_stamp_ns=5_000_000_001, right_stamp_ns=5_100_000_000, frame_id="fundus",
                model_id="m@1", backend="onnxruntime")
    base.update(kw)
    return ResultContext(**base)


def test_ok_result_is_self_contained():
    probs = np.array([0.2, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7], np.float32)
    d = decide(probs, np.full(8, 0.5, np.float32))
    good = QualityReport(score=0.8, gradable=True)
    msg = ok_result(_ctx(left_quality=good, right_quality=good,
                         timings_ms={"preprocess": 3, "inference": 7, "total": 12}), d, CLASS_CODES, CLASS_NAMES)
    assert msg.status == DiagnosisResult.STATUS_OK and msg.status_message == "ok"
    assert msg.header.stamp.sec == 5 and msg.header.stamp.nanosec == 100_000_000  # later eye
    assert msg.left_stamp.nanosec == 1 and msg.header.frame_id == "fundus"
    assert list(msg.positive_codes) == ["D", "O"] and msg.referable
    assert msg.summary == "REFER: D 0.90, O 0.70"
    np.testing.assert_allclose(msg.probabilities, probs)
    assert list(msg.class_names) == list(CLASS_NAMES)
    assert msg.left_gradable and math.isclose(msg.left_quality, 0.8, rel_tol=1e-6) and msg.total_ms == 12


def test_ok_result_carries_per_eye_probabilities_and_the_side_of_each_finding():
    probs = np.array([0.1, 0.9, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1], np.float32)
    left = np.array([0.2, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32)
    right = np.array([0.2, 0.8, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1], np.float32)
    d = decide(probs, np.full(8, 0.5, np.float32))
    msg = ok_result(_ctx(), d, CLASS_CODES, CLASS_NAMES, left_probabilities=left, right_probabilities=right)
    np.testing.assert_allclose(msg.left_probabilities, left)
    np.testing.assert_allclose(msg.right_probabilities, right)
    assert list(msg.positive_codes) == ["D", "C"] and list(msg.positive_eyes) == ["both", "right"]
    assert msg.summary == "REFER: D 0.90 (both eyes), C 0.80 (right eye)"
    # a model without per-eye heads: empty per-eye arrays, no side in the summary
    legacy = ok_result(_ctx(), d, CLASS_CODES, CLASS_NAMES)
    assert len(legacy.left_probabilities) == 0 and list(legacy.positive_eyes) == ["", ""]
    assert legacy.summary == "REFER: D 0.90, C 0.80"


def test_published_cam_overlays_name_their_class_per_eye():
    from dms_net_core.evidence import evidence_maps
    from dms_net_core.exam_pipeline import ExamResult, ExamStatus, PreparedEye
    from dms_net_ros.messages import exam_result_msg

    probs = np.array([0.1, 0.9, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1], np.float32)
    left = np.array([0.2, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32)   # D
    right = np.array([0.2, 0.8, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1], np.float32)  # D and C, C stronger
    cams = np.random.default_rng(0).normal(size=(8, 4, 4)).astype(np.float32)
    result = ExamResult(ExamStatus.OK, "ok", PreparedEye(), PreparedEye(), probabilities=probs, left_probabilities=left,
                        right_probabilities=right, decision=decide(probs, np.full(8, 0.5, np.float32)), cam_left=cams,
                        cam_right=cams)
    result.evidence_left, result.evidence_right = evidence_maps(cams, cams, left, right, result.decision)
    msg = exam_result_msg(_ctx(), result, CLASS_CODES, CLASS_NAMES, attention_published=True)
    assert msg.attention_published and (msg.left_attention_code, msg.right_attention_code) == ("D", "C")
    quiet = exam_result_msg(_ctx(), result, CLASS_CODES, CLASS_NAMES, attention_published=False)
    assert (quiet.left_attention_code, quiet.right_attention_code) == ("", "")  # nothing published, no class claimed


def test_normal_summary_and_not_confident_normal_is_referable():
    d = decide(np.array([0.9] + [0.1] * 7, np.float32), np.full(8, 0.5, np.float32))
    assert summarize(d, CLASS_CODES).startswith("no referable finding")
    d = decide(np.array([0.3] + [0.1] * 7, np.float32), np.full(8, 0.5, np.float32))
    assert d.referable and summarize(d, CLASS_CODES).startswith("REFER: not confidently normal")


def test_ungradable_and_error_results():
    bad = QualityReport(score=0.0, gradable=False, reasons=["mean_luma 3 < 20"])
    msg = ungradable_result(_ctx(left_quality=QualityReport(0.9, True), right_quality=bad))
    assert msg.status == DiagnosisResult.STATUS_UNGRADABLE
    assert list(msg.quality_reasons) == ["right: mean_luma 3 < 20"] and not msg.right_gradable
    assert "retake" in msg.status_message and len(msg.probabilities) == 0
    err = error_result(_ctx(), "left eye: empty image")
    assert err.status == DiagnosisResult.STATUS_ERROR and math.isnan(err.left_quality) and err.exam_id == "E1"


def test_diagnostics_report_rates_latency_and_drops():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    stats = PipelineStats()
    for i in range(20):
        stats.record_result(0, total_ms=float(i), now=100.0 + i * 0.5)
    stats.record_drop("queue_overflow", 3)
    arr = to_diagnostic_array(stats, node_name="/ns/dms", stamp=Time(), backend="onnxruntime", engine="ort cpu",
                              model_id="m", queue_depth=1)
    values = diagnostic_values(arr)
    assert arr.status[0].name == "/ns/dms: pipeline" and arr.status[0].level == DiagnosticStatus.WARN
    assert values["results_ok"] == "20" and values["drops_queue_overflow"] == "3" and values["drops_total"] == "3"
    assert float(values["latency_p50_ms"]) == 9.5 and float(values["latency_p95_ms"]) > 17
    again = to_diagnostic_array(stats, node_name="/ns/dms", stamp=Time(), backend="onnxruntime", engine="e",
                                model_id="m", queue_depth=0)
    assert again.status[0].level == DiagnosticStatus.OK  # no new problems since the last report
    assert to_diagnostic_array(stats, node_name="n", stamp=Time(), backend="", engine="", model_id="",
                               queue_depth=0).status[0].level == DiagnosticStatus.ERROR


def test_params_file_matches_declared_parameters():
    from dms_net_ros.node_parameters import PARAMETERS

    params = yaml.safe_load((REPO / "config" / "diagnose.yaml").read_text())["/**"]["ros__parameters"]
    declared = {p.name: p for p in PARAMETERS}
    assert set(params) == set(declared)
    for name, value in params.items():
        assert type(value) is type(declared[name].default), name  # ROS rejects a type change
        assert declared[name].description
