"""Attention overlays over real DDS, on the torch backend (the one that can skip copying the maps
back): with ``publish_attention`` the node publishes an rgb8 overlay per eye and says so in the
result; without it the result is the same diagnosis with no overlay and ``attention_published``
false (the torch backend then leaves the maps out of its output). A plain per-eye bundle
exported with class activation maps gets one overlay per eye too: the map of that eye's
strongest positive finding (else its top class), with the class named in the result. A model
with neither (the plain control without per-eye heads, or a per-eye bundle exported before
CAMs, like today's demo model) has no maps to draw: the node says so once and publishes no flat
overlays."""

from __future__ import annotations

import numpy as np
import pytest

from test.conftest import export_ros_tiny_bundle
from test.ros.harness import Client, NodeProcess, node_command, require_ros, sample_rgb

require_ros()
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402

SEC = 1_000_000_000


def _diagnose(tiny_bundle, namespace: str, log, publish_attention: bool, expect_overlays: bool | None = None,
              backend: str = "torch") -> tuple[object, list]:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    params = {"backend": backend, "publish_attention": publish_attention}
    node = NodeProcess(node_command(tiny_bundle, namespace, params), log)
    client = None
    try:
        client = Client(namespace)
        overlays: list = []
        for eye in ("left", "right"):
            client.node.create_subscription(Image, f"{eye}/attention", overlays.append,
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        client.wait_for_node(node)
        client.publish_pair(rgb_to_image_msg(sample_rgb("556", "left")), rgb_to_image_msg(sample_rgb("556", "right")),
                            5 * SEC)
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
    assert with_maps.left_attention_code == with_maps.right_attention_code == ""  # OSIM attention: no class
    without, none = _diagnose(tiny_bundle, ros_namespace + "_off", tmp_path / "off.log", False)
    assert without.status == 0 and not without.attention_published and none == []
    np.testing.assert_allclose(without.probabilities, with_maps.probabilities, atol=1e-6)


def test_a_model_without_osim_publishes_no_overlays_and_says_why(ros_domain, ros_namespace, tmp_path):
    plain = export_ros_tiny_bundle(tmp_path / "plain", architecture="plain_binocular")
    result, overlays = _diagnose(plain, ros_namespace, tmp_path / "plain.log", True, expect_overlays=False)
    assert result.status == 0 and not result.attention_published and overlays == []
    log = (tmp_path / "plain.log").read_text()
    assert "has no OSIM attention maps and no class activation maps: no overlays are published" in log


def _expected_evidence_code(result, eye: str) -> str:
    """The evidence rule (dms_net_core.evidence) read back from the message: the eye's strongest
    positive disease finding by its own probability, else its top class."""
    probs = np.asarray(result.left_probabilities if eye == "left" else result.right_probabilities)
    codes = list(result.class_codes)
    findings = [c for c, side in zip(result.positive_codes, result.positive_eyes) if c != "N" and side in (eye, "both")]
    if findings:
        return max(findings, key=lambda c: probs[codes.index(c)])
    return codes[int(np.argmax(probs))]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_plain_per_eye_bundle_publishes_class_activation_overlays(backend, ros_domain, ros_namespace, tmp_path):
    from dms_net_core.bundle import ModelBundle

    bundle = export_ros_tiny_bundle(tmp_path / "cam", architecture="plain_binocular", per_eye_heads=True)
    assert ModelBundle.load(bundle).has_cams
    result, overlays = _diagnose(bundle, ros_namespace, tmp_path / "cam.log", True, backend=backend)
    assert result.status == 0 and result.attention_published and result.backend == backend
    assert len(overlays) == 2 and all(o.encoding == "rgb8" and o.width == o.height == 64 for o in overlays)
    stamps = sorted(o.header.stamp.sec * SEC + o.header.stamp.nanosec for o in overlays)
    assert stamps == [5 * SEC, 5 * SEC + 10_000_000]  # each overlay carries its eye image's stamp
    for eye in ("left", "right"):
        assert getattr(result, f"{eye}_attention_code") == _expected_evidence_code(result, eye)
    assert "no overlays are published" not in (tmp_path / "cam.log").read_text()


def test_a_per_eye_bundle_exported_without_cams_still_diagnoses_and_says_why_no_overlays(ros_domain, ros_namespace,
                                                                                         tmp_path):
    import torch

    from dms_net_core.bundle_export import export_bundle
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.model import DMSNetConfig, build_model

    torch.manual_seed(0)
    cfg = DMSNetConfig.tiny(architecture="plain_binocular", per_eye_heads=True)
    old = export_bundle(build_model(cfg).eval(), cfg, PreprocessConfig(image_size=cfg.image_size), tmp_path / "old",
                        name="tiny-pre-cam", cams=False)  # the graph a per-eye bundle had before CAMs (models/demo)
    assert not old.has_cams
    result, overlays = _diagnose(old.path, ros_namespace, tmp_path / "old.log", True, expect_overlays=False,
                                 backend="onnxruntime")
    assert result.status == 0 and not result.attention_published and overlays == []
    assert len(result.left_probabilities) == 8 and result.left_attention_code == result.right_attention_code == ""
    assert "has no OSIM attention maps and no class activation maps" in (tmp_path / "old.log").read_text()
