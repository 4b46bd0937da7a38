"""Attention overlays over real DDS, on the torch backend (the one that can skip copying the maps
back): with ``publish_attention`` the node publishes an rgb8 overlay per eye and says so in the
result; without it the result is the same diagnosis with no overlay and ``attention_published``
false (the torch backend then leaves the maps out of its output). A model without OSIM (the
plain binocular control, today's demo model) has no maps to draw: the node says so once and
publishes no flat overlays."""

from __future__ import annotations

import numpy as np
import pytest

from test.conftest import export_tiny_bundle
from test.ros.harness import Client, NodeProcess, node_command, require_ros, sample_rgb

require_ros()
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402

SEC = 1_000_000_000


def _diagnose(tiny_bundle, namespace: str, log, publish_attention: bool, expect_overlays: bool | None = None) -> tuple[object, list]:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    params = {"backend": "torch", "publish_attention": publish_attention}
    node = NodeProcess(node_command(tiny_bundle, namespace, params), log)
    client = None
    try:
        client = Client(namespace)
        overlays: list = []
        for eye in ("left", "right"):
            client.node.create_subscription(Image, f"{eye}/attention", overlays.append,
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        client.wait_for_node(node)
        client.publish_pair(rgb_to_image_msg(sample_rgb("556", "left")), rgb_to_image_msg(sample_rgb("556", "right")), 5 * SEC)
        (result,) = client.wait_results(1, 60)
        expect = publish_attention if expect_overlays is None else expect_overlays
        client.spin_until(lambda: len(overlays) >= 2 or not expect, 10)
        client.spin_for(0.5)
        return result, overlays
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_torch_backend_publishes_overlays_only_when_asked(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    with_maps, overlays = _diagnose(tiny_bundle, ros_namespace + "_on", tmp_path / "on.log", True)
    assert with_maps.status == 0 and with_maps.attention_published and with_maps.backend == "torch"
    assert len(overlays) == 2 and all(o.encoding == "rgb8" and o.width > 0 for o in overlays)
    without, none = _diagnose(tiny_bundle, ros_namespace + "_off", tmp_path / "off.log", False)
    assert without.status == 0 and not without.attention_published and none == []
    np.testing.assert_allclose(without.probabilities, with_maps.probabilities, atol=1e-6)


def test_a_model_without_osim_publishes_no_overlays_and_says_why(ros_domain, ros_namespace, tmp_path):
    plain = export_tiny_bundle(tmp_path / "plain", architecture="plain_binocular")
    result, overlays = _diagnose(plain, ros_namespace, tmp_path / "plain.log", True, expect_overlays=False)
    assert result.status == 0 and not result.attention_published and overlays == []
    log = (tmp_path / "plain.log").read_text()
    assert "has no OSIM attention maps: no overlays are published" in log
