"""The "publisher(s) on left/image_raw ... but no image" warning (the silent QoS mismatch):
its clock runs from when the publisher appeared, not from activation, so a camera started
after the node is not warned about just before its first image."""

from __future__ import annotations

import time

import pytest

from test.ros.harness import Client, NodeProcess, node_command, require_ros, sample_rgb

require_ros()
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402

SEC = 1_000_000_000
WARN_S = 10.0  # generous: discovery on 2 loaded cores (CI, or beside a training job) took 4-6 s
WARNING = "but no image"


def _wait_active(node: NodeProcess, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while "active: subscribed to" not in node.log_text():
        assert node.proc.poll() is None and time.monotonic() < end, node.log_text()[-2000:]
        time.sleep(0.1)


def test_camera_started_after_the_node_is_not_warned_before_its_first_image(tiny_bundle, ros_domain, ros_namespace,
                                                                            tmp_path):
    """Node active for longer than no_input_warn_s, then the camera appears and sends its first
    pair within that time: no warning (before the fix it warned as soon as it saw the publisher)."""
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, {"no_input_warn_s": WARN_S}), tmp_path / "node.log")
    client = None
    try:
        _wait_active(node)
        time.sleep(WARN_S + 0.5)  # no camera yet: silence without a publisher is not a mismatch
        client = Client(ros_namespace)
        appeared = time.monotonic()
        client.wait_for_node(node)
        client.spin_for(1.0)  # a few of the node's 0.5 s checks see the publisher
        assert time.monotonic() - appeared < WARN_S - 1.5, "discovery took too long for this check to mean anything"
        client.publish_pair(rgb_to_image_msg(sample_rgb("556", "left")), rgb_to_image_msg(sample_rgb("556", "right")),
                            3 * SEC)
        assert len(client.wait_results(1, 30)) == 1, node.log_text()[-2000:]
        assert WARNING not in node.log_text(), node.log_text()[-2000:]
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_publisher_that_never_sends_is_warned_about_counting_from_its_appearance(tiny_bundle, ros_domain,
                                                                                 ros_namespace, tmp_path):
    node = NodeProcess(node_command(tiny_bundle, ros_namespace, {"no_input_warn_s": 1.0}), tmp_path / "node.log")
    client = None
    try:
        _wait_active(node)
        client = Client(ros_namespace)
        client.wait_for_node(node)
        end = time.monotonic() + 15
        while WARNING not in node.log_text() and time.monotonic() < end:
            client.spin_for(0.2)
        lines = [line for line in node.log_text().splitlines() if WARNING in line]
        assert lines, node.log_text()[-2000:]
        assert (f"publisher(s) on {ros_namespace}/" in lines[0]
                and "s since the publisher was first seen (our QoS reliable)" in lines[0])
    finally:
        if client is not None:
            client.close()
        node.stop()
