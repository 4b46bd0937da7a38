"""No image lost or misdiagnosed in silence (issue 16): the node as a real process over DDS.

Each test below failed before its fix (the item of the issue in brackets):

* rgb8 with padded rows (step 769 and 772 for width 256) gives a result [1];
* an unexpected exception while processing a pair ends as a counted ERROR result [1]
  (the bug is injected: `faulty_node.py`);
* noise and other non-fundus images come out UNGRADABLE, never OK [2];
* one image stamped an hour ahead costs that image only; the pairs after it are diagnosed [3];
* images published but lost in transport are counted on /diagnostics [4];
* a bag made by ``dms-net-bag make`` records its topics' QoS, and played with it (as
  ``ros2 bag play`` does) the results carry the exam ids; an exam id from a volatile
  publisher reaches the results too [5];
* a 10 MB exam id gives ERROR results and a bounded log line, not a 10 MB log [6];
* ``backend: tensorrt`` without TensorRT fails configure with one line naming the fix [8].
Item 7 (memory) is a benchmark: ``benchmarks/soak.py``, result in benchmarks/RESULTS.md.

The module ends with the accounting rule over everything it published to the shared node:
received images == images in results + images dropped (by reason) + images pending, and
nothing lost in transport on a reliable subscription.

Cases tried beyond the issue's list (kept as tests here or in the unit tests named):
mono8, bgr8 and rgba8 rows padded too (and every encoding x padding x copy mode,
test_image_codec.py); both eyes stamped an hour ahead (two ERRORs, then pairing resumes);
a pair from the future, a clock reset and a looping bag without a node clock to catch them
(test_pairing.py: one exam lost, then pairing resumes); a single late image that must not
reset the clock; unstamped images (stamp 0: ERROR results naming the clock, and pairing
goes on); a pair re-sent with its stamps (counted as duplicates); an exam id of exactly 256
characters (accepted) and 257 (refused); an exam id
published latched and volatile at once (each message applied once, in order); an injected
exception in the quality gate's successor step; Gaussian, salt-and-pepper, blue,
fundus-coloured, smoothed and faint noise, noise inside a fundus-coloured disc at 12
amplitude/grain combinations, flat fills, gradients, checkerboards, text pages, terminal and
UI screenshots, a synthetic outdoor scene, 26 real photographs of other things and the same
cropped into a round vignette, camera-size noise frames (test_fundus_plausibility.py; what
still passes is listed in the README); the real fundus photographs in 2048x1536 and
4096x3072 frames, clipped by the sensor, monochrome, and from another camera (must pass).
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest

from test.ros.harness import (
    REPO,
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

from dms_net_ros.image_codec import pixels_to_image_msg, rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

SEC = 1_000_000_000
OK, UNGRADABLE, ERROR = DiagnosisResult.STATUS_OK, DiagnosisResult.STATUS_UNGRADABLE, DiagnosisResult.STATUS_ERROR
PUBLISHED = {"images": 0}  # every image this module publishes to the shared node


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """(client, node): one node for the module; slop 50 ms, pair timeout 1.5 s, diagnostics every 0.2 s."""
    ns = isolate_module_domain("16", 16, range(1, 100))
    params = {"slop_s": 0.05, "pair_timeout_s": 1.5, "diagnostics_period_s": 0.2, "exam_id": "EXAM-PARAM"}
    with served_node(tiny_bundle, ns, params, tmp_path_factory.mktemp("node") / "node.log") as served_pair:
        yield served_pair


def now_ns() -> int:
    """Stamps on the node's clock (same machine, wall time), at least 100 ms apart (> slop)."""
    now_ns.last = max(time.time_ns(), getattr(now_ns, "last", 0) + SEC // 10)
    return now_ns.last


def publish(client: Client, eye: str, msg, stamp: int) -> None:
    client.publish(eye, msg, stamp)
    PUBLISHED["images"] += 1


def send_pair(client: Client, left, right, stamp: int | None = None, n_expected: int = 1,
              timeout: float = 15.0) -> list:
    start = len(client.results)
    stamp = now_ns() if stamp is None else stamp
    publish(client, "left", left, stamp)
    publish(client, "right", right, stamp + 10_000_000)
    client.wait_results(start + n_expected, timeout)
    return client.results[start:]


def good_pair(patient: str = "556"):
    return rgb_to_image_msg(sample_rgb(patient, "left"), "rgb8"), rgb_to_image_msg(sample_rgb(patient, "right"), "rgb8")


def assert_serves(client: Client, node: NodeProcess) -> None:
    got = send_pair(client, *good_pair())
    assert got and got[-1].status == OK, (got[-1].status_message if got else "no result", node.log_text()[-2000:])


# -- 1: padded rows, unexpected exceptions ------------------------------------------------


@pytest.mark.parametrize("encoding,step",
                         [("rgb8", 769), ("rgb8", 772), ("bgr8", 772), ("rgba8", 1028), ("mono8", 260)])
def test_padded_rows_give_the_unpadded_result(served, tiny_bundle, encoding, step):
    client, node = served
    left_rgb, right_rgb = sample_rgb("951", "left"), sample_rgb("951", "right")
    from dms_net_ros.image_codec import rgb_to_pixels

    channels = rgb_to_pixels(left_rgb[:1, :1], encoding).shape[2]
    left = pixels_to_image_msg(rgb_to_pixels(left_rgb, encoding), encoding, row_padding=step - 256 * channels)
    assert left.step == step and left.width == 256
    got = send_pair(client, left, rgb_to_image_msg(right_rgb, "rgb8"))
    assert len(got) == 1 and got[0].status == OK, (got and got[0].status_message, node.log_text()[-1500:])
    if encoding != "mono8":
        np.testing.assert_allclose(got[0].probabilities, offline_probabilities(tiny_bundle, left_rgb, right_rgb),
                                   atol=1e-5)


def test_unexpected_exception_ends_as_a_counted_error_result(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    from test.ros.faulty_node import TRIGGER_WIDTH

    cmd = node_command(tiny_bundle, ros_namespace, {"diagnostics_period_s": 0.2},
                       executable=[sys.executable, "-m", "test.ros.faulty_node"])
    node = NodeProcess(cmd, tmp_path / "node.log")
    client = None
    try:
        client = Client(ros_namespace)
        client.wait_for_node(node)
        wide = [cv2.resize(sample_rgb("556", eye), (TRIGGER_WIDTH, 256), interpolation=cv2.INTER_AREA)
                for eye in ("left", "right")]
        client.publish_pair(rgb_to_image_msg(wide[0]), rgb_to_image_msg(wide[1]), 10 * SEC)
        client.wait_results(1)
        assert client.results, f"no result for the failing pair:\n{node.log_text()[-2000:]}"
        res = client.results[0]
        assert (res.status == ERROR and res.status_message.startswith("internal error")
                and "injected failure" in res.status_message)
        client.publish_pair(*good_pair(), 20 * SEC)
        client.wait_results(2)
        assert client.results[1].status == OK, node.log_text()[-2000:]
        # one diagnostics message counts both (an earlier one may predate the OK result: wait, do not race)
        assert client.spin_until(lambda: client.diagnostics and client.diagnostics[-1]["results_error"] == "1"
                                 and client.diagnostics[-1]["results_ok"] == "1", 30.0), client.diagnostics[-1:]
    finally:
        if client is not None:
            client.close()
        node.stop()


# -- 2: what is not a fundus photograph is never diagnosed ------------------------------


def _non_fundus_cases() -> list[tuple[str, np.ndarray]]:
    from test.fakes.non_fundus import in_round_vignette, library_photographs, synthetic_non_fundus

    generated = synthetic_non_fundus(size=512)
    cases = [(name, generated[name]) for name in ("uniform noise", "gaussian noise",
                                                  "fundus-coloured disc of gaussian noise",
                                                  "fundus-coloured disc of smooth blobs", "text page", "outdoor scene")]
    photos = library_photographs()
    for name in ("photo:coffee.png", "photo:astronaut.png"):
        if name in photos:
            cases += [(name, photos[name]), (f"{name} in a round vignette", in_round_vignette(photos[name]))]
    return cases


@pytest.mark.parametrize("name,image", _non_fundus_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_non_fundus_images_are_ungradable_not_diagnosed(served, name, image):
    client, node = served
    msg = rgb_to_image_msg(image, "rgb8")
    got = send_pair(client, msg, msg)
    assert len(got) == 1, node.log_text()[-1500:]
    res = got[0]
    assert res.status == UNGRADABLE, (name, res.status, res.status_message)
    assert not res.left_gradable and not res.right_gradable and len(res.probabilities) == 0
    assert any("not a fundus photograph" in r or "featureless" in r
               for r in res.quality_reasons), list(res.quality_reasons)


def test_noise_beside_a_real_eye_is_still_ungradable(served):
    client, node = served
    noise = rgb_to_image_msg(np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    left, _ = good_pair("951")
    res = send_pair(client, left, noise)[-1]
    assert res.status == UNGRADABLE and res.left_gradable and not res.right_gradable
    assert_serves(client, node)


# -- 3: a stamp from the future -----------------------------------------------------------


def test_an_image_stamped_an_hour_ahead_costs_that_image_only(served):
    client, node = served
    assert_serves(client, node)
    start = len(client.results)
    left, _ = good_pair("583")
    publish(client, "left", left, now_ns() + 3600 * SEC)
    client.wait_results(start + 1, 5.0)
    res = client.results[start]
    assert res.status == ERROR and "ahead of this node's clock" in res.status_message
    for patient in ("951", "556", "583"):  # every later, correctly stamped pair is diagnosed
        got = send_pair(client, *good_pair(patient))
        assert got[-1].status == OK, got[-1].status_message


def test_both_eyes_an_hour_ahead_cost_that_pair_only(served):
    client, node = served
    start = len(client.results)
    future = now_ns() + 3600 * SEC
    left, right = good_pair("951")
    publish(client, "left", left, future)
    publish(client, "right", right, future)
    client.wait_results(start + 2, 5.0)
    assert [r.status for r in client.results[start:]] == [ERROR, ERROR]
    assert_serves(client, node)


# -- 5 and 6: the exam id -----------------------------------------------------------------


def test_exam_id_from_a_volatile_publisher_reaches_the_results(served):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    client, node = served
    volatile = client.node.create_publisher(String, "exam_id",
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    try:
        assert client.spin_until(lambda: volatile.get_subscription_count() > 0, 10.0), (
            "the node has no subscription a volatile publisher matches")
        client.spin_for(0.3)
        volatile.publish(String(data="EXAM-VOLATILE-1"))
        client.spin_for(0.5)
        assert send_pair(client, *good_pair())[-1].exam_id == "EXAM-VOLATILE-1"
        assert "incompatible QoS" not in node.log_text()  # by design, not worth a warning
    finally:
        client.node.destroy_publisher(volatile)


def test_latched_exam_ids_in_quick_succession_apply_in_order(served):
    """The latched topic is read by two subscriptions: each message must apply once, in order."""
    client, _ = served
    for i in range(5):
        client.publish_exam_id(f"EXAM-SEQ-{i}")
    client.spin_for(2.0)  # generous: the node applies latched ids in its own executor
    assert send_pair(client, *good_pair())[-1].exam_id == "EXAM-SEQ-4"


def test_a_10_mb_exam_id_gives_error_results_and_a_bounded_log(served):
    client, node = served
    log_before = node.log_path.stat().st_size
    client.publish_exam_id("X" * (10 * 2**20))
    client.spin_for(1.0)
    res = send_pair(client, *good_pair())[-1]
    assert res.status == ERROR and "exam id of 10485760 characters refused" in res.status_message
    assert len(res.exam_id) < 100 and len(res.probabilities) == 0
    assert node.log_path.stat().st_size - log_before < 10_000, "the exam id was logged verbatim"
    client.publish_exam_id("E" * 256)  # the longest accepted
    client.spin_for(0.8)
    res = send_pair(client, *good_pair())[-1]
    assert res.status == OK and res.exam_id == "E" * 256
    client.publish_exam_id("EXAM-AFTER")
    client.spin_for(0.8)
    assert send_pair(client, *good_pair())[-1].exam_id == "EXAM-AFTER"
    assert client.spin_until(lambda: client.diagnostics and client.diagnostics[-1].get("exam_id_refused") == "1", 3.0)


def test_a_bag_played_with_its_recorded_qos_carries_the_exam_ids(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    """What ``ros2 bag play`` does (rosbag2 is not installable here): publish each topic with
    the QoS recorded in the bag's metadata, reliable + volatile when none is recorded."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosReliability

    from dms_net_ros.bag import io
    from dms_net_ros.bag.make import load_records, make_bag
    from dms_net_ros.bag.replay import import_msg_class

    records, _ = load_records(REPO / "demo" / "samples", None, "951,556", None)
    bag = make_bag(records, tmp_path / "exams").bag
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, {"slop_s": 0.5}), tmp_path / "node.log")
    client = None
    try:
        client = Client(ros_namespace)
        client.wait_for_node(node)
        publishers, plan = {}, []
        with io.BagReader(bag) as reader:
            for conn in reader.reader.connections:
                offered = conn.ext.offered_qos_profiles
                if conn.topic == "/exam_id":
                    assert [(q.reliability, q.durability) for q in offered] == [
                        (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)]
                latched = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
                qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
                publishers[conn.id] = client.node.create_publisher(import_msg_class(conn.msgtype),
                                                                   conn.topic.lstrip("/"), qos)
            plan = list(reader.messages([reader.find_topic(t)
                                         for t in ("exam_id", "left/image_raw", "right/image_raw")]))
        client.spin_for(1.5)  # discovery of the new publishers
        for conn, _, raw in plan:
            publishers[conn.id].publish(bytes(raw))
            client.spin_for(0.3)
        client.wait_results(2)
        assert [r.exam_id for r in client.results] == ["exam-951", "exam-556"], node.log_text()[-2000:]
        assert all(r.status == OK for r in client.results)
    finally:
        if client is not None:
            client.close()
        node.stop()


# -- 4: transport loss --------------------------------------------------------------------


def test_images_lost_in_transport_are_counted(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    """An unpaced best-effort burst into a subscription that keeps one image: most never
    arrive. Every published image is then a result, a counted drop or a counted loss."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    params = {"qos": "sensor_data", "qos_depth": 1, "slop_s": 0.05, "pair_timeout_s": 1.0, "diagnostics_period_s": 0.2,
              "worker_queue_size": 1}
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, params), tmp_path / "node.log")
    client = None
    n_pairs = 40
    try:
        client = Client(ros_namespace)
        client.wait_for_node(node)
        # New publishers (born after the node subscribed): their sequence numbers start at 1.
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        client.pubs = {eye: client.node.create_publisher(Image, f"{eye}/image_raw", best_effort)
                       for eye in ("left", "right")}
        assert client.spin_until(lambda: all(p.get_subscription_count() > 0 for p in client.pubs.values()), 10.0)
        client.spin_for(0.5)
        big = {eye: rgb_to_image_msg(cv2.resize(sample_rgb("556", eye), (1024, 1024)), "rgb8")
               for eye in ("left", "right")}
        base = time.time_ns()
        for i in range(n_pairs):
            client.publish_pair(big["left"], big["right"], base + i * SEC // 10)
        client.spin_for(2.0)
        # reveals losses at the end of the burst
        client.publish_pair(big["left"], big["right"], base + n_pairs * SEC // 10)
        published = 2 * (n_pairs + 1)

        def settled() -> bool:
            d = client.diagnostics[-1] if client.diagnostics else {}
            return bool(d) and d["images_pending"] == "0" and int(d["received_left"]) + int(d["received_right"]) == \
                int(d["images_in_results"]) + int(d["images_dropped"])

        assert client.spin_until(settled, 30.0), (client.diagnostics[-1:], node.log_text()[-2000:])
        client.spin_for(0.5)
        d = client.diagnostics[-1]
        lost = int(d["transport_lost_left"]) + int(d["transport_lost_right"])
        received = int(d["received_left"]) + int(d["received_right"])
        print("transport:", {k: d[k] for k in d if k.startswith(("received", "transport", "sequence", "dds", "images",
                                                                 "results", "drops"))})
        assert lost > 0, f"the burst lost nothing: the test did not exercise transport loss ({d})"
        assert received + lost == published, d
        assert int(d["images_in_results"]) + int(d["images_dropped"]) + lost == published, d
        assert "published but never received (transport loss, counted)" in node.log_text()
    finally:
        if client is not None:
            client.close()
        node.stop()


# -- 8: a backend that is not installed -----------------------------------------------------


def test_tensorrt_without_tensorrt_fails_configure_naming_the_fix(tiny_bundle, tmp_path, ros_domain, ros_namespace):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the missing-module error cannot happen")
    except ImportError:
        pass
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, {"backend": "tensorrt", "device": "auto"}),
                       tmp_path / "node.log")
    assert node.exit_code() == 1
    errors = node.configure_errors()
    assert len(errors) == 1, node.log_text()[-2000:]
    assert ("module 'tensorrt' not installed" in errors[0] and "install TensorRT" in errors[0]
            and "backend auto" in errors[0])


# -- the accounting rule over this module's shared node -------------------------------------


def test_unstamped_and_resent_images_are_accounted_for(served):
    """Stamp 0 (a camera that does not stamp): ERROR results naming the clock, then pairing
    goes on; a pair re-sent with the same stamps: counted as duplicates, not diagnosed twice."""
    client, node = served
    left, right = good_pair("951")
    start = len(client.results)
    publish(client, "left", left, 0)
    publish(client, "right", right, 0)
    client.wait_results(start + 2, 5.0)
    assert [r.status for r in client.results[start:]] == [ERROR, ERROR]
    assert all("check the camera clocks" in r.status_message for r in client.results[start:])
    before = int(client.diagnostics[-1].get("drops_duplicate", 0))
    stamp = now_ns()
    assert send_pair(client, left, right, stamp)[-1].status == OK
    publish(client, "left", left, stamp)
    publish(client, "right", right, stamp + 10_000_000)
    assert client.spin_until(lambda: int(client.diagnostics[-1].get("drops_duplicate", 0)) == before + 2, 5.0)
    assert_serves(client, node)


def test_every_image_published_to_the_node_is_accounted_for(served):
    """Runs last in this module: received == in results + dropped + pending, nothing lost."""
    client, node = served
    assert_serves(client, node)

    def balanced() -> bool:
        d = client.diagnostics[-1] if client.diagnostics else {}
        received = int(d.get("received_left", -1)) + int(d.get("received_right", -1))
        return (received == PUBLISHED["images"] and d["images_pending"] == "0"
                and received == int(d["images_in_results"]) + int(d["images_dropped"]))

    assert client.spin_until(balanced, 10.0), (PUBLISHED, client.diagnostics[-1:])
    d = client.diagnostics[-1]
    assert d["transport_lost_left"] == d["transport_lost_right"] == "0"
    results = sum(int(d[f"results_{s}"]) for s in ("ok", "ungradable", "error"))
    assert results == len(client.results)
