"""Live-vs-offline comparison without ROS: recorded DiagnosisResults (written with rosbags
from msg/DiagnosisResult.msg) are matched to offline pairs by stamps, and every missing
pair is explained by an ERROR result or by the node's drop counters, or flagged."""

from __future__ import annotations

import numpy as np
import pytest

from dms_net_ros.bag import io
from dms_net_ros.bag.compare import compare, read_live_recording
from dms_net_ros.bag.pair_results import PairResult

S = 1_000_000_000


def _result(left_ns: int, right_ns: int, status: int = 0, probs=None, exam_id: str = "", message: str = "ok",
            eye_probs=None):
    ts = io.typestore()
    left_p, right_p = (np.asarray(e, np.float32) for e in (eye_probs or ([], [])))
    cls = ts.types[io.DIAGNOSIS_RESULT_TYPE]
    probs = np.asarray(probs if probs is not None else [], np.float32)
    n = len(probs)
    return cls(header=io.make_header(max(left_ns, right_ns), "l"), exam_id=exam_id, left_stamp=io.ns_to_stamp(left_ns),
               right_stamp=io.ns_to_stamp(right_ns), status=status, status_message=message,
               class_codes=["N"] * n, class_names=["x"] * n, probabilities=probs,
               thresholds=np.full(n, 0.5, np.float32), positives=np.zeros(n, np.bool_), positive_codes=[],
               referable=False, summary="", left_quality=1.0,
               right_quality=1.0, left_gradable=True, right_gradable=True, quality_reasons=[], model_id="m",
               backend="onnxruntime", backend_detail="", attention_published=False, preprocess_ms=1.0, inference_ms=1.0,
               total_ms=2.0, left_probabilities=left_p, right_probabilities=right_p, positive_eyes=[],
               left_attention_code="", right_attention_code="")


def _diagnostics(values: dict[str, str], name: str = "dms_net_diagnosis: pipeline"):
    ts = io.typestore()
    kv = ts.types["diagnostic_msgs/msg/KeyValue"]
    status = ts.types["diagnostic_msgs/msg/DiagnosticStatus"](
        level=0, name=name, message="", hardware_id="", values=[kv(key=k, value=v) for k, v in values.items()])
    return ts.types[io.DIAGNOSTIC_ARRAY_TYPE](header=io.make_header(0, ""), status=[status])


def _offline(n: int, rng: np.random.Generator) -> list[PairResult]:
    return [PairResult(exam_id=f"exam-{i}", left_stamp_ns=(10 + 2 * i) * S,
                       right_stamp_ns=(10 + 2 * i) * S + 3 * S // 10,
                       probabilities=rng.random(8).astype(np.float32)) for i in range(n)]


def _record(tmp_path, results, diagnostics=None):
    with io.BagWriter(tmp_path / "results", "mcap") as writer:
        t = 1
        for msg in results:
            writer.write("/diagnosis", io.DIAGNOSIS_RESULT_TYPE, t, msg)
            t += 1
        if diagnostics is not None:
            writer.write("/diagnostics", io.DIAGNOSTIC_ARRAY_TYPE, t, diagnostics)
    return read_live_recording(tmp_path / "results")


def test_identical_live_results_match_exactly(tmp_path):
    offline = _offline(5, np.random.default_rng(0))
    live = _record(tmp_path, [_result(p.left_stamp_ns, p.right_stamp_ns, probs=p.probabilities, exam_id=p.exam_id)
                              for p in offline],
                   _diagnostics({"drops_total": "0", "results_ok": "5"}))
    assert [r.probabilities.tolist() for r in live.results] == [p.probabilities.tolist() for p in offline]
    cmp = compare(offline, live)
    assert (cmp.matched, cmp.missing, cmp.unexplained, cmp.live_only, cmp.exam_id_mismatches) == (5, 0, 0, 0, 0)
    assert cmp.max_abs_prob_diff == 0.0 and live.diagnostics["results_ok"] == "5"


def test_probability_difference_and_status_mismatch_are_reported(tmp_path):
    offline = _offline(3, np.random.default_rng(1))
    shifted = offline[0].probabilities + np.float32(1e-3)
    results = [_result(offline[0].left_stamp_ns, offline[0].right_stamp_ns, probs=shifted, exam_id="exam-0"),
               _result(offline[1].left_stamp_ns, offline[1].right_stamp_ns, status=1, exam_id="wrong"),
               _result(offline[2].left_stamp_ns, offline[2].right_stamp_ns, probs=offline[2].probabilities,
                       exam_id="exam-2")]
    cmp = compare(offline, _record(tmp_path, results))
    assert cmp.matched == 2 and cmp.max_abs_prob_diff == pytest.approx(1e-3, rel=1e-3)
    assert cmp.status_mismatches == 1 and cmp.exam_id_mismatches == 1 and cmp.missing == 0


def test_per_eye_probabilities_are_compared_too(tmp_path):
    offline = _offline(2, np.random.default_rng(4))
    for p in offline:
        p.left_probabilities, p.right_probabilities = p.probabilities * 0.5, p.probabilities * 0.25
    off_eyes = lambda p: (p.left_probabilities, p.right_probabilities)  # noqa: E731
    shifted_right = offline[1].right_probabilities + np.float32(2e-3)
    results = [_result(offline[0].left_stamp_ns, offline[0].right_stamp_ns, probs=offline[0].probabilities,
                       eye_probs=off_eyes(offline[0])),
               _result(offline[1].left_stamp_ns, offline[1].right_stamp_ns, probs=offline[1].probabilities,
                       eye_probs=(offline[1].left_probabilities, shifted_right))]
    live = _record(tmp_path, results)
    assert live.results[0].left_probabilities.tolist() == offline[0].left_probabilities.tolist()
    cmp = compare(offline, live)
    assert cmp.matched == 2 and cmp.max_abs_prob_diff == pytest.approx(2e-3, rel=1e-3)
    # live without per-eye outputs where offline has them: the results are not identical
    assert compare(offline, _record(tmp_path / "b", [_result(offline[0].left_stamp_ns, offline[0].right_stamp_ns,
                                                             probs=offline[0].probabilities)])).max_abs_prob_diff == 1.0


def test_missing_pairs_explained_by_errors_then_drops_else_unexplained(tmp_path):
    offline = _offline(6, np.random.default_rng(2))
    results = [_result(p.left_stamp_ns, p.right_stamp_ns, probs=p.probabilities) for p in offline[:3]]
    # pair 3: the node says its right eye never arrived (ERROR naming the left stamp)
    results.append(_result(offline[3].left_stamp_ns, 0, status=2, message="right eye never arrived"))
    # pairs 4 and 5: silently absent; the node counted one queue overflow
    live = _record(tmp_path, results,
                   _diagnostics({"drops_queue_overflow": "1", "drops_unpaired_timeout": "0", "drops_total": "1"}))
    cmp = compare(offline, live)
    assert cmp.missing == 3 and cmp.explained_by_error_results == 1
    assert cmp.node_drops == {"queue_overflow": 1, "unpaired_timeout": 0} and cmp.node_extra_drops == 1
    assert cmp.unexplained == 1 and len(cmp.missing_examples) == 3
    assert "unexplained 1" in cmp.format()


def test_offline_pairing_drops_are_not_counted_twice(tmp_path):
    offline = _offline(2, np.random.default_rng(3))
    live = _record(tmp_path,
                   [_result(offline[0].left_stamp_ns, offline[0].right_stamp_ns, probs=offline[0].probabilities)],
                   _diagnostics({"drops_unpaired_timeout": "2", "drops_total": "2"}))
    # both sides dropped the same two unpaired images: that explains nothing about pair 1
    assert compare(offline, live, offline_unpaired=2).unexplained == 1
    assert compare(offline, live, offline_unpaired=1).unexplained == 0


def test_results_topic_missing_is_one_line(tmp_path):
    with io.BagWriter(tmp_path / "results", "mcap") as writer:
        writer.write("/chatter", io.STRING_TYPE, 1, io.make_string("x"))
    with pytest.raises(io.BagError, match="no topic 'diagnosis'.*/chatter"):
        read_live_recording(tmp_path / "results")
