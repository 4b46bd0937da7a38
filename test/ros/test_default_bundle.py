"""The installed package's default bundle (``bundle: models/demo`` in config/diagnose.yaml)
works from any working directory: the node finds the demo model in its share directory and
says so. Before, it failed configure with "model bundle models/demo is not a directory"
anywhere but the repository root."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from test.ros.harness import REPO, Client, require_ros, sample_rgb

require_ros()
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

INSTALLED = REPO / "install" / "dms_net_ros"


def test_installed_node_finds_the_demo_model_from_any_directory(ros_domain, ros_namespace, tmp_path):
    exe = INSTALLED / "lib" / "dms_net_ros" / "diagnose"
    params = INSTALLED / "share" / "dms_net_ros" / "config" / "diagnose.yaml"
    if not exe.exists():
        pytest.skip("install/dms_net_ros/lib/dms_net_ros/diagnose missing: run `bash scripts/setup.sh`")
    cmd = [str(exe), "--ros-args", "--params-file", str(params), "-r", f"__ns:={ros_namespace}",
           "-p", "backend:=onnxruntime", "-p", "qos:=reliable", "-p", "warmup_iterations:=1"]
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    client = None
    try:
        client = Client(ros_namespace)
        client.wait_for_node(timeout=60)
        client.publish_pair(rgb_to_image_msg(sample_rgb("32", "left")), rgb_to_image_msg(sample_rgb("32", "right")),
                            5_000_000_000)
        results = client.wait_results(1, 60)
        text = log_path.read_text(errors="replace")
        assert [r.status for r in results] == [DiagnosisResult.STATUS_OK], text[-2000:]
        share_demo = INSTALLED / "share" / "dms_net_ros" / "models" / "demo"
        assert f"model bundle {share_demo} (relative to the package share directory)" in text, text[-2000:]
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
