"""Lifecycle transitions through the real lifecycle services, overload accounting, and the
installed executable started with the shipped params file and remaps."""

from __future__ import annotations

import cv2
import pytest

from test.ros.harness import REPO, Client, NodeProcess, node_command, require_ros, sample_rgb

require_ros()
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_compressed_msg, rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

SEC = 1_000_000_000
NODE = "dms_net_diagnosis"


def _call(client: Client, srv_type, name: str, request, timeout: float = 15.0):
    cli = client.node.create_client(srv_type, name)
    try:
        assert client.spin_until(cli.service_is_ready, 10.0), f"service {name} not available"
        future = cli.call_async(request)
        assert client.spin_until(future.done, timeout), f"{name} did not answer"
        return future.result()
    finally:
        client.node.destroy_client(cli)


def _transition(client: Client, ns: str, transition_id: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    return _call(client, ChangeState, f"{ns}/{NODE}/change_state",
                 ChangeState.Request(transition=Transition(id=transition_id))).success


def _state(client: Client, ns: str) -> str:
    from lifecycle_msgs.srv import GetState

    return _call(client, GetState, f"{ns}/{NODE}/get_state", GetState.Request()).current_state.label


def _node_endpoints(client: Client, ns: str) -> tuple[set[str], set[str]]:
    """Topics the node subscribes / publishes, from the ROS graph (another process's view)."""
    client.spin_for(0.8)  # graph updates propagate asynchronously
    subs = {t for t, _ in client.node.get_subscriber_names_and_types_by_node(NODE, ns)}
    pubs = {t for t, _ in client.node.get_publisher_names_and_types_by_node(NODE, ns)}
    return subs, pubs


def test_lifecycle_transitions_leak_nothing(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    from lifecycle_msgs.msg import Transition

    ns = ros_namespace
    node = NodeProcess(node_command(tiny_bundle, ns, {"autostart": False}), tmp_path / "node.log")
    client = None
    left_topic, right_topic, diag_topic = f"{ns}/left/image_raw", f"{ns}/right/image_raw", f"{ns}/diagnosis"
    try:
        client = Client(ns)
        assert client.spin_until(
            lambda: node.proc.poll() is not None or client.node.count_subscribers(left_topic) >= 0, 1)
        assert _state(client, ns) == "unconfigured"
        subs, pubs = _node_endpoints(client, ns)
        assert left_topic not in subs and diag_topic not in pubs

        for cycle in range(2):  # configure/activate/deactivate/cleanup twice: nothing accumulates
            assert _transition(client, ns, Transition.TRANSITION_CONFIGURE), node.log_text()[-2000:]
            assert _state(client, ns) == "inactive"
            subs, pubs = _node_endpoints(client, ns)
            assert diag_topic in pubs and left_topic not in subs and f"{ns}/exam_id" in subs

            assert _transition(client, ns, Transition.TRANSITION_ACTIVATE)
            assert _state(client, ns) == "active"
            client.wait_for_node(node)
            assert client.node.count_subscribers(left_topic) == 1 and client.node.count_subscribers(right_topic) == 1
            assert client.node.count_publishers(diag_topic) == 1
            start = len(client.results)
            client.publish_pair(rgb_to_image_msg(sample_rgb("951", "left")),
                                rgb_to_image_msg(sample_rgb("951", "right")), (10 + cycle) * SEC)
            client.wait_results(start + 1)
            assert client.results[-1].status == DiagnosisResult.STATUS_OK

            assert _transition(client, ns, Transition.TRANSITION_DEACTIVATE)
            subs, pubs = _node_endpoints(client, ns)
            assert left_topic not in subs and right_topic not in subs and diag_topic in pubs

            assert _transition(client, ns, Transition.TRANSITION_CLEANUP)
            assert _state(client, ns) == "unconfigured"
            subs, pubs = _node_endpoints(client, ns)
            assert not ({left_topic, right_topic, f"{ns}/exam_id"} & subs) and diag_topic not in pubs
        assert node.proc.poll() is None
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_missing_bundle_fails_configure_with_one_line(tmp_path, ros_domain, ros_namespace):
    node = NodeProcess(node_command(tmp_path / "no_such_bundle", ros_namespace), tmp_path / "node.log")
    assert node.exit_code() == 1
    log = node.log_text()
    assert "configure failed" in log and "no_such_bundle" in log and "dms-net-export" in log


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"torch_accel": "turbo"},
         "unknown torch acceleration 'turbo': choose one of none, cuda_graph, compile, compile_cudagraphs"),
        ({"backend": "onnxruntime", "torch_accel": "cuda_graph"},
         "torch_accel=cuda_graph applies to the torch backend only"),
    ],
)
def test_bad_torch_accel_fails_configure_with_one_line(tiny_bundle, tmp_path, ros_domain, ros_namespace, params,
                                                       expected):
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, params), tmp_path / "node.log")
    assert node.exit_code() == 1
    errors = node.configure_errors()
    assert len(errors) == 1 and expected in errors[0], node.log_text()[-2000:]  # one line naming cause and fix


def test_overload_loses_no_accounting(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    """Pairs published faster than the node serves them: results + counted drops = published.

    Compressed transport makes the overload certain on any machine: publishing a JPEG pair
    costs ~1 ms, while the node must decode two 2048x1536 JPEGs (~30 ms) per pair.
    """
    ns = ros_namespace
    params = {"worker_queue_size": 1, "diagnostics_period_s": 0.2, "image_transport": "compressed"}
    node = NodeProcess(node_command(tiny_bundle, ns, params), tmp_path / "node.log")
    client = None
    n_pairs = 16
    try:
        client = Client(ns, compressed=True)
        client.wait_for_node(node)
        big = [cv2.resize(sample_rgb("556", eye), (2048, 1536), interpolation=cv2.INTER_CUBIC)
               for eye in ("left", "right")]
        left, right = rgb_to_compressed_msg(big[0]), rgb_to_compressed_msg(big[1])
        for i in range(n_pairs):
            client.publish_pair(left, right, (100 + i) * SEC)

        def settled() -> bool:
            if not client.diagnostics:
                return False
            d = client.diagnostics[-1]
            return (int(d.get("received_left", 0)) == n_pairs and int(d.get("received_right", 0)) == n_pairs
                    and d["queue_depth"] == "0"
                    and int(d["worker_processed"]) + int(d.get("drops_queue_overflow", 0)) == n_pairs)

        assert client.spin_until(settled, 60.0), (client.diagnostics[-1:], node.log_text()[-2000:])
        client.spin_for(1.0)
        d = client.diagnostics[-1]
        drops = int(d.get("drops_queue_overflow", 0))
        assert len(client.results) + drops == n_pairs, (len(client.results), d)
        assert int(d["drops_total"]) == drops  # nothing lost in pairing
        assert drops > 0, "the burst never overflowed the queue: the test did not overload the node"
        assert int(d["results_ok"]) + int(d["results_ungradable"]) + int(d["results_error"]) == len(client.results)
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_installed_executable_with_params_file_and_remaps(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    exe = REPO / "install" / "dms_net_ros" / "lib" / "dms_net_ros" / "diagnose"
    if not exe.exists():
        pytest.skip("install/dms_net_ros/lib/dms_net_ros/diagnose missing: run `bash scripts/setup.sh`")
    ns = ros_namespace
    remaps = {"left/image_raw": "camera_l/image", "right/image_raw": "camera_r/image", "diagnosis": "dms/result"}
    cmd = node_command(tiny_bundle, ns, executable=[str(exe)], remaps=remaps, test_defaults=False)
    node = NodeProcess(cmd, tmp_path / "node.log")
    client = None
    try:
        import rclpy  # noqa: F401
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        client = Client(ns)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        client.pubs = {"left": client.node.create_publisher(Image, "camera_l/image", qos),
                       "right": client.node.create_publisher(Image, "camera_r/image", qos)}
        remapped: list = []
        client.node.create_subscription(DiagnosisResult, "dms/result", remapped.append, qos)
        assert client.spin_until(lambda: all(p.get_subscription_count() > 0 for p in client.pubs.values())
                                 and client.node.count_publishers(f"{ns}/dms/result") > 0, 20), node.log_text()[-2000:]
        client.spin_for(0.5)
        client.publish_pair(rgb_to_image_msg(sample_rgb("32", "left")), rgb_to_image_msg(sample_rgb("32", "right")),
                            5 * SEC)
        assert client.spin_until(lambda: len(remapped) == 1, 15), node.log_text()[-2000:]
        assert remapped[0].status == DiagnosisResult.STATUS_OK
        log = node.log_text()
        # the params file's QoS (sensor_data = best effort) is in effect and logged with the remapped topics
        assert "with QoS sensor_data (best_effort, keep last 5)" in log and f"{ns}/camera_l/image" in log
    finally:
        if client is not None:
            client.close()
        node.stop()
