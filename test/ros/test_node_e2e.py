"""The diagnosis node as a real subprocess, driven over DDS from this test process.

One node per module serves the end-to-end and bad-input tests (each bad input is followed
by a good pair that must still come back OK), so the whole file costs one node start-up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from test.ros.harness import (
    Client,
    NodeProcess,
    isolate_module_domain,
    node_command,
    offline_probabilities,
    require_ros,
    sample_rgb,
    served_node,
)

require_ros()
pytestmark = pytest.mark.ros

from dms_net_core.postprocess import coherent_positive  # noqa: E402
from dms_net_ros.image_codec import pixels_to_image_msg, rgb_to_compressed_msg, rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

PATIENTS = ("951", "556", "583")
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """(client, node) with a running node: pair timeout 1.5 s, max_pixels 600x600."""
    ns = isolate_module_domain("e2e", 7, range(60, 100))
    params = {"pair_timeout_s": 1.5, "max_pixels": 600 * 600, "exam_id": "EXAM-PARAM"}
    with served_node(tiny_bundle, ns, params, tmp_path_factory.mktemp("node") / "node.log") as served_pair:
        yield served_pair


class Clock:
    """Strictly increasing stamps, 2 s apart (well beyond slop)."""

    def __init__(self) -> None:
        self.t = 1_000 * SEC

    def next(self) -> int:
        self.t += 2 * SEC
        return self.t


CLOCK = Clock()


def send_and_get(client: Client, left, right, *, n_expected: int = 1, timeout: float = 15.0, **kw):
    start = len(client.results)
    client.publish_pair(left, right, CLOCK.next(), **kw)
    client.wait_results(start + n_expected, timeout)
    return client.results[start:]


def good_pair(patient: str = "951"):
    return rgb_to_image_msg(sample_rgb(patient, "left"), "rgb8"), rgb_to_image_msg(sample_rgb(patient, "right"), "bgr8")


def assert_ok_after(client: Client, node: NodeProcess) -> None:
    got = send_and_get(client, *good_pair("556"))
    assert got and got[-1].status == DiagnosisResult.STATUS_OK, node.log_text()[-2000:]
    assert node.proc.poll() is None


def test_results_equal_offline_evaluation(served, tiny_bundle):
    client, node = served
    for patient in PATIENTS:
        left_rgb, right_rgb = sample_rgb(patient, "left"), sample_rgb(patient, "right")
        stamp = CLOCK.next()
        start = len(client.results)
        client.publish_pair(rgb_to_image_msg(left_rgb, "rgb8"), rgb_to_image_msg(right_rgb, "bgr8"), stamp)
        client.wait_results(start + 1)
        assert len(client.results) == start + 1, node.log_text()[-2000:]
        res = client.results[-1]
        assert res.status == DiagnosisResult.STATUS_OK, res.status_message
        expected = offline_probabilities(tiny_bundle, left_rgb, right_rgb)
        np.testing.assert_allclose(np.asarray(res.probabilities), expected, atol=1e-5)
        # the message is self-contained for a display
        assert list(res.class_codes) == list("NDGCAHMO") and len(res.class_names) == 8
        thr = np.asarray(res.thresholds)
        # per-class thresholds with the coherence rule: N never positive beside a disease
        assert list(res.positives) == [bool(v) for v in coherent_positive(expected, thr)]
        assert list(res.positive_codes) == [c for c, p in zip(res.class_codes, res.positives) if p]
        assert res.exam_id == "EXAM-PARAM"
        assert res.left_stamp.sec * SEC + res.left_stamp.nanosec == stamp
        assert res.right_stamp.sec * SEC + res.right_stamp.nanosec == stamp + 10_000_000
        assert res.model_id.startswith("tiny-ros-test@") and res.backend == "onnxruntime"
        assert 0.0 <= res.left_quality <= 1.0 and res.left_gradable and res.right_gradable
        assert res.total_ms >= res.inference_ms > 0.0
    # the three patients' results differ: the comparison above is not trivially satisfied
    probs = np.array([r.probabilities for r in client.results[-3:]])
    assert np.ptp(probs, axis=0).max() > 1e-3


def test_exam_id_topic_is_latched_and_copied(served):
    client, node = served
    client.publish_exam_id("EXAM-TOPIC-7")
    client.spin_for(0.5)
    got = send_and_get(client, *good_pair())
    assert got[-1].exam_id == "EXAM-TOPIC-7"


@pytest.mark.parametrize(
    "case",
    ["unknown_encoding", "step_mismatch", "empty", "too_large"],
)
def test_bad_raw_input_gives_error_and_node_keeps_serving(served, case):
    client, node = served
    left_rgb = sample_rgb("951", "left")
    good = rgb_to_image_msg(sample_rgb("951", "right"), "rgb8")
    if case == "unknown_encoding":
        bad = rgb_to_image_msg(left_rgb, "rgb8")
        bad.encoding = "yuv422_weird"
        needle = "unsupported image encoding"
    elif case == "step_mismatch":
        bad = rgb_to_image_msg(left_rgb, "rgb8")
        bad.step = bad.step - 3
        needle = "step"
    elif case == "empty":
        bad = rgb_to_image_msg(left_rgb, "rgb8")
        bad.height, bad.width, bad.step, bad.data = 0, 0, 0, b""
        needle = "empty image"
    else:
        bad = rgb_to_image_msg(np.zeros((700, 700, 3), np.uint8), "rgb8")
        needle = "max_pixels"
    got = send_and_get(client, bad, good)
    assert got[-1].status == DiagnosisResult.STATUS_ERROR
    assert needle in got[-1].status_message and got[-1].status_message.startswith("left eye:")
    assert len(got[-1].probabilities) == 0 and math.isnan(got[-1].left_quality)
    assert_ok_after(client, node)


def test_ungradable_image_gives_ungradable_with_reasons(served):
    client, node = served
    black = rgb_to_image_msg(np.zeros((300, 300, 3), np.uint8), "rgb8")
    _, good = good_pair()
    got = send_and_get(client, good, black)
    res = got[-1]
    assert res.status == DiagnosisResult.STATUS_UNGRADABLE, res.status_message
    assert not res.right_gradable and res.left_gradable
    assert res.quality_reasons and all(r.startswith("right: ") for r in res.quality_reasons)
    assert_ok_after(client, node)


def test_one_eye_never_arriving_gives_error(served):
    client, node = served
    start = len(client.results)
    left, _ = good_pair()
    client.publish("left", left, CLOCK.next())
    client.wait_results(start + 1, timeout=6.0)  # pair_timeout_s=1.5 + housekeeping period
    res = client.results[start]
    assert res.status == DiagnosisResult.STATUS_ERROR
    assert "right eye never arrived" in res.status_message
    assert "right eye never arrived" in node.log_text()
    assert_ok_after(client, node)


def test_out_of_order_stamp_gives_error(served):
    client, node = served
    left, right = good_pair()
    stamp = CLOCK.next()
    start = len(client.results)
    client.publish_pair(left, right, stamp)
    client.wait_results(start + 1)
    # a left image stamped before the pair that was already served
    client.publish("left", left, stamp - SEC)
    client.wait_results(start + 2)
    res = client.results[start + 1]
    assert res.status == DiagnosisResult.STATUS_ERROR and "already paired" in res.status_message
    assert_ok_after(client, node)


def test_corrupt_jpeg_via_compressed_transport(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, {"image_transport": "compressed"}),
                       tmp_path / "node.log")
    client = None
    try:
        client = Client(ros_namespace, compressed=True)
        client.wait_for_node(node)
        left_rgb, right_rgb = sample_rgb("583", "left"), sample_rgb("583", "right")
        corrupt = rgb_to_compressed_msg(left_rgb, "jpeg")
        corrupt.data = bytes(corrupt.data)[: len(corrupt.data) // 3]
        corrupt.data = b"\x00" * 64 + bytes(corrupt.data)[64:]
        client.publish_pair(corrupt, rgb_to_compressed_msg(right_rgb, "png"), 10 * SEC)
        client.wait_results(1)
        assert client.results[0].status == DiagnosisResult.STATUS_ERROR
        assert "corrupt" in client.results[0].status_message
        good_l, good_r = rgb_to_compressed_msg(left_rgb, "png"), rgb_to_compressed_msg(right_rgb, "png")
        client.publish_pair(good_l, good_r, 20 * SEC)
        client.wait_results(2)
        res = client.results[1]
        assert res.status == DiagnosisResult.STATUS_OK, res.status_message
        # png is lossless: same probabilities as the offline evaluation
        np.testing.assert_allclose(res.probabilities, offline_probabilities(tiny_bundle, left_rgb, right_rgb),
                                   atol=1e-5)
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_16bit_big_endian_input_is_scaled(served, tiny_bundle):
    """mono16 big-endian with row padding arrives as the same 8-bit image as mono8."""
    client, node = served
    import cv2

    grey = cv2.cvtColor(sample_rgb("556", "left"), cv2.COLOR_RGB2GRAY)
    wide = grey.astype(np.uint16) * 257
    left = pixels_to_image_msg(wide, "mono16", is_bigendian=True, row_padding=6)
    right = pixels_to_image_msg(grey, "mono8")
    got = send_and_get(client, left, right)
    assert got[-1].status == DiagnosisResult.STATUS_OK, got[-1].status_message
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    np.testing.assert_allclose(got[-1].probabilities, offline_probabilities(tiny_bundle, rgb, rgb), atol=1e-5)
