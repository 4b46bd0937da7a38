"""`ros2 launch dms_net_ros diagnose.launch.py` for real: the installed launch file, started
by the ros2 CLI from a directory outside the repository, real sample eye pairs in, results
out on the expected topic, and Ctrl-C (SIGINT to the process group) leaving no process.

Skips, saying why, where the launch packages (a test-only dependency from
../shared/ros2-launch) are not installed; nothing else depends on them.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from test.ros.harness import REPO, Client, require_ros, sample_rgb
from test.ros.launch_harness import (
    README_COMMANDS,
    LaunchProcess,
    ros2_launch_unavailable,
    ros2_lifecycle,
)

require_ros()
_UNAVAILABLE = ros2_launch_unavailable()
if _UNAVAILABLE:
    pytest.skip(_UNAVAILABLE, allow_module_level=True)
pytestmark = pytest.mark.ros

from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

SEC = 1_000_000_000
NODE = "dms_net_diagnosis"
ACTIVE = "active: subscribed to"


def _args(readme_command: str) -> list[str]:
    """The launch arguments of a README command line."""
    words = readme_command.split()
    assert words[:4] == ["ros2", "launch", "dms_net_ros", "diagnose.launch.py"], readme_command
    return words[4:]


def _ctrl_c_leaves_nothing(launch: LaunchProcess) -> None:
    pids = launch.node_pids()
    assert len(pids) == 1, launch.log_text()[-2000:]
    rc = launch.interrupt()
    assert rc == 0, launch.log_text()[-2000:]
    assert "process has finished cleanly" in launch.log_text(), launch.log_text()[-2000:]
    deadline = time.monotonic() + 5
    while launch.group_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launch.group_processes() == [], f"processes left after Ctrl-C: {launch.group_processes()}"


def test_default_arguments_from_any_directory(ros_domain, tmp_path):
    """The plain README command, run outside the repository: the demo model from the package
    share, two real sample pairs from demo/publish_samples.py, OK results, clean Ctrl-C."""
    launch = LaunchProcess(_args(README_COMMANDS[0]), tmp_path / "launch.log", cwd=tmp_path)
    try:
        launch.wait_for_log(ACTIVE, 60)
        assert "share/dms_net_ros/models/demo (relative to the package share directory)" in launch.log_text()
        camera = subprocess.run(
            [sys.executable, str(REPO / "demo" / "publish_samples.py"), "--limit", "2", "--timeout", "60"],
            check=False, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )
        assert camera.returncode == 0, camera.stdout + camera.stderr + launch.log_text()[-2000:]
        assert "results: OK 2, UNGRADABLE 0, ERROR 0" in camera.stdout, camera.stdout
        _ctrl_c_leaves_nothing(launch)
    finally:
        launch.stop()


def test_namespace_remaps_and_reliable_qos(ros_domain, tmp_path):
    """The README's integrator command: results on /exam_room/diagnosis from the remapped
    camera topics, through a RELIABLE subscription."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    launch = LaunchProcess(_args(README_COMMANDS[1]), tmp_path / "launch.log", cwd=tmp_path)
    client = None
    try:
        launch.wait_for_log(ACTIVE, 60)
        client = Client("/exam_room")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        client.pubs = {eye: client.node.create_publisher(Image, f"/fundus/{eye}/image_raw", qos)
                       for eye in ("left", "right")}
        client.wait_for_node()
        subs = client.node.get_subscriptions_info_by_topic("/fundus/left/image_raw")
        assert ([s.node_namespace for s in subs] == ["/exam_room"]
                and subs[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE)
        for i, patient in enumerate(("556", "32")):
            client.publish_pair(rgb_to_image_msg(sample_rgb(patient, "left")),
                                rgb_to_image_msg(sample_rgb(patient, "right")), (10 + i) * SEC)
        results = client.wait_results(2, 60)
        assert [r.status for r in results] == [DiagnosisResult.STATUS_OK] * 2, [r.status_message for r in results]
        assert "with QoS reliable (reliable, keep last 5); publishing /exam_room/diagnosis" in launch.log_text()
        _ctrl_c_leaves_nothing(launch)
    finally:
        if client is not None:
            client.close()
        launch.stop()


def test_autostart_false_then_ros2_lifecycle_set(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    """``autostart:=False`` (any letter case) waits unconfigured; ``ros2 lifecycle set``
    configures and activates it; then results arrive."""
    ns, node = ros_namespace, f"{ros_namespace}/{NODE}"
    args = [f"namespace:={ns}", f"bundle:={tiny_bundle}", "backend:=onnxruntime", "qos:=reliable", "autostart:=False"]
    launch = LaunchProcess(args, tmp_path / "launch.log", cwd=tmp_path)
    client = None
    try:
        launch.wait_for_log("process started with pid", 30)
        client = Client(ns)
        from lifecycle_msgs.srv import GetState

        get_state = client.node.create_client(GetState, f"{node}/get_state")
        assert client.spin_until(get_state.service_is_ready, 30), launch.log_text()[-2000:]
        client.spin_for(1.0)
        assert all(p.get_subscription_count() == 0 for p in client.pubs.values()), "subscribed before activation"
        future = get_state.call_async(GetState.Request())
        assert client.spin_until(future.done, 10) and future.result().current_state.label == "unconfigured"
        for transition in ("configure", "activate"):
            done = ros2_lifecycle("set", node, transition)
            assert done.returncode == 0 and "Transitioning successful" in done.stdout, (
                done.stdout + done.stderr + launch.log_text()[-2000:])
        client.wait_for_node()
        client.publish_pair(rgb_to_image_msg(sample_rgb("556", "left")), rgb_to_image_msg(sample_rgb("556", "right")),
                            7 * SEC)
        results = client.wait_results(1, 30)
        assert [r.status for r in results] == [DiagnosisResult.STATUS_OK], launch.log_text()[-2000:]
        _ctrl_c_leaves_nothing(launch)
    finally:
        if client is not None:
            client.close()
        launch.stop()


@pytest.mark.parametrize(
    "argument, expected",
    [
        ("autostart:=yes", "autostart:=yes is not a boolean: use autostart:=true or autostart:=false "
                           "(any letter case), or omit autostart"),
        ("autostart:=1", "autostart:=1 is not a boolean"),
        ("qos:=''", "qos:='' is a quoted empty value, which ros2 launch passes literally: "
                    "omit qos to keep the params file's value"),
        ("left_topic:=\"\"", 'left_topic:="" is a quoted empty value'),
    ],
)
def test_unusable_argument_stops_the_launch_with_one_line(argument, expected, ros_domain, tmp_path):
    """Before: ``autostart:=yes`` silently left the node unconfigured and ``qos:=''`` failed
    configure with a confusing value; now the launch stops at once, naming the fix."""
    launch = LaunchProcess([argument], tmp_path / "launch.log", cwd=tmp_path)
    try:
        rc = launch.proc.wait(30)
        errors = [line for line in launch.log_text().splitlines() if "[ERROR]" in line]
        assert rc != 0 and len(errors) == 1 and expected in errors[0], launch.log_text()
        assert launch.node_pids() == []
    finally:
        launch.stop()


def test_value_the_node_rejects_ends_the_launch_with_exit_code_0(tiny_bundle, ros_domain, tmp_path):
    """A value only the node can judge (``qos:=bogus``) fails configure with one line and the
    node exits 1; ``ros2 launch`` still exits 0 (upstream; the README tells supervisors what
    to do instead)."""
    launch = LaunchProcess([f"bundle:={tiny_bundle}", "qos:=bogus"], tmp_path / "launch.log", cwd=tmp_path)
    try:
        rc = launch.proc.wait(60)
        log = launch.log_text()
        assert "configure failed: qos must be 'sensor_data' or 'reliable', got 'bogus'" in log, log
        assert "process has died" in log and "exit code 1" in log, log
        assert rc == 0, log
        assert launch.group_processes() == []
    finally:
        launch.stop()


def test_display_argument_starts_the_display_beside_the_node(ros_domain, tmp_path):
    """``display:=true``: the display in the node's namespace serves the result of a real pair
    (with both photographs, matched by stamp); Ctrl-C stops both processes."""
    import json
    import re
    import urllib.request

    launch = LaunchProcess(["namespace:=exam_room", "qos:=reliable", "display:=true", "display_port:=0"],
                           tmp_path / "launch.log", cwd=tmp_path)
    client = None
    try:
        launch.wait_for_log(ACTIVE, 60)
        launch.wait_for_log("display at http://127.0.0.1:", 60)
        url = re.search(r"display at (http://\S+)", launch.log_text()).group(1)
        client = Client("/exam_room")
        client.wait_for_node()
        client.spin_until(lambda: all(p.get_subscription_count() >= 2 for p in client.pubs.values()), 30)
        client.publish_pair(rgb_to_image_msg(sample_rgb("103", "left")), rgb_to_image_msg(sample_rgb("103", "right")),
                            20 * SEC)
        assert [r.status for r in client.wait_results(1, 60)] == [DiagnosisResult.STATUS_OK]
        end = time.monotonic() + 30
        while True:  # the display got the same result and both eye images
            with urllib.request.urlopen(url + "api/state", timeout=10) as r:
                exams = json.load(r)["exams"]
            if (exams and exams[-1]["images"] == ["left", "right"]) or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert exams and exams[-1]["images"] == ["left", "right"] and exams[-1]["referable"], exams
        assert "/exam_room/dms_net_display" in launch.log_text() or "exam_room.dms_net_display" in launch.log_text()
        assert len(launch.node_pids()) == 2
        assert launch.interrupt() == 0, launch.log_text()[-2000:]
        deadline = time.monotonic() + 5
        while launch.group_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert launch.group_processes() == [], f"processes left after Ctrl-C: {launch.group_processes()}"
    finally:
        if client is not None:
            client.close()
        launch.stop()
