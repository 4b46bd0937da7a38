"""Camera-size frames under the default QoS (sensor_data, best effort) with the shipped Fast
DDS profile, from a best-effort publisher, through the real node (issue 25): a 4096x4096
rgb8 pair (50 MB an eye) gets a result, and a 4100x4100 mono8 pair (over max_pixels) gets
its max_pixels error, not "eye never arrived". Before the profile's port queue was raised
the 50 MB pair vanished without a count. Deadlines are generous (2 loaded cores)."""

from __future__ import annotations

import numpy as np
import pytest

from test.ros.harness import Client, NodeProcess, node_command, require_ros

require_ros()
pytestmark = pytest.mark.ros

SEC = 1_000_000_000


def _frame(width: int, height: int, encoding: str, channels: int, seed: int):
    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, encoding=encoding, step=width * channels)
    msg.data = np.random.default_rng(seed).integers(0, 256, height * width * channels, dtype=np.uint8).tobytes()
    return msg


@pytest.fixture
def best_effort_node(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    params = {"qos": "sensor_data", "qos_depth": 5, "warmup_iterations": 1, "pair_timeout_s": 20.0}
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, params, test_defaults=False), tmp_path / "node.log")
    client = None
    try:
        client = Client(ros_namespace)
        for eye in ("left", "right"):  # a camera's QoS: best effort, keep last 5
            client.node.destroy_publisher(client.pubs[eye])
            client.pubs[eye] = client.node.create_publisher(
                Image, eye + "/image_raw", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        client.wait_for_node(node, timeout=90)
        yield client, node
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_a_50_mb_pair_under_best_effort_gets_a_result(best_effort_node):
    client, node = best_effort_node
    assert "qos sensor_data (best effort) carries" not in node.log_text()  # the shipped profile carries max_pixels
    client.publish_pair(_frame(4096, 4096, "rgb8", 3, 1), _frame(4096, 4096, "rgb8", 3, 2), 10 * SEC)
    results = client.wait_results(1, 120)
    assert len(results) == 1, node.log_text()[-3000:]
    assert "never arrived" not in results[0].status_message, results[0].status_message
    assert results[0].left_stamp.sec == 10 and results[0].right_stamp.sec == 10  # both eyes arrived


def test_an_over_max_pixels_pair_gets_its_max_pixels_error(best_effort_node):
    client, node = best_effort_node
    client.publish_pair(_frame(4100, 4100, "mono8", 1, 3), _frame(4100, 4100, "mono8", 1, 4), 10 * SEC)
    results = client.wait_results(1, 120)
    assert len(results) == 1, node.log_text()[-3000:]
    text = results[0].status_message
    assert "never arrived" not in text and text.count("over max_pixels=16777216") == 2, text
