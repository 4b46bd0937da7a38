"""The diagnose_exam action over real DDS: the node in its own process, an rclpy ActionClient here.

One node serves the module (pair_timeout_s 1 s, so an unpaired eye is reported quickly);
the inactive-node test starts its own with autostart off. Each test leaves the node idle.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

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

from action_msgs.msg import GoalStatus  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402

from dms_net_ros.action import DiagnoseExam  # noqa: E402
from dms_net_ros.image_codec import rgb_to_compressed_msg, rgb_to_image_msg  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402

Goal, Result, Feedback = DiagnoseExam.Goal, DiagnoseExam.Result, DiagnoseExam.Feedback
SEC = 1_000_000_000
NODE = "dms_net_diagnosis"


@dataclass
class GoalRun:
    handle: Any
    feedback: list[Any]
    result_future: Any

    def stages(self) -> list[int]:
        return [f.stage for f in self.feedback]


class ExamClient:
    """The test's side of the action: a real rclpy ActionClient on the harness client's node."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.action = ActionClient(client.node, DiagnoseExam, "diagnose_exam")

    def wait_for_server(self, node: NodeProcess, timeout: float = 20.0) -> None:
        assert self.client.spin_until(self.action.server_is_ready, timeout), node.log_text()[-2000:]
        self.client.spin_for(0.5)  # feedback/status topics matched too

    def send(self, goal: Any, timeout: float = 10.0) -> GoalRun:
        feedback: list[Any] = []
        future = self.action.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback))
        assert self.client.spin_until(future.done, timeout), "the goal was never answered"
        handle = future.result()
        assert handle.accepted  # every goal is accepted by the protocol; refusals come back as REJECTED results
        return GoalRun(handle, feedback, handle.get_result_async())

    def result(self, run: GoalRun, timeout: float = 20.0) -> tuple[int, Any]:
        assert self.client.spin_until(run.result_future.done, timeout), "no result: the goal hangs"
        response = run.result_future.result()
        return response.status, response.result

    def wait_feedback(self, run: GoalRun, stage: int, timeout: float = 10.0) -> Any:
        assert self.client.spin_until(lambda: stage in run.stages(), timeout), run.stages()
        return next(f for f in run.feedback if f.stage == stage)


class Clock:
    """Strictly increasing stamps 2 s apart (beyond slop), shared by the module's tests."""

    def __init__(self) -> None:
        self.t = 1_000 * SEC

    def next(self) -> int:
        self.t += 2 * SEC
        return self.t


CLOCK = Clock()


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """(client, exams, node) with a running node in its own process."""
    ns = isolate_module_domain("exam", 18, range(1, 60))
    params = {"pair_timeout_s": 1.0, "max_pixels": 600 * 600, "exam_id": "EXAM-PARAM", "diagnostics_period_s": 0.5}
    with served_node(tiny_bundle, ns, params, tmp_path_factory.mktemp("node") / "node.log") as (client, node):
        exams = ExamClient(client)
        exams.wait_for_server(node)
        yield client, exams, node


def inline_goal(exam_id: str, patient: str = "951", *, compressed: bool = False, timeout_s: float = 20.0) -> Any:
    left, right = sample_rgb(patient, "left"), sample_rgb(patient, "right")
    goal = Goal(exam_id=exam_id, timeout_s=timeout_s)
    if compressed:
        goal.source = Goal.SOURCE_COMPRESSED
        goal.left_compressed, goal.right_compressed = (rgb_to_compressed_msg(left, "png"),
                                                       rgb_to_compressed_msg(right, "png"))
    else:
        goal.source = Goal.SOURCE_IMAGES
        goal.left_image, goal.right_image = rgb_to_image_msg(left, "rgb8"), rgb_to_image_msg(right, "bgr8")
    return goal


def camera_pair(patient: str = "951") -> tuple[Any, Any]:
    return rgb_to_image_msg(sample_rgb(patient, "left"), "rgb8"), rgb_to_image_msg(sample_rgb(patient, "right"), "rgb8")


def same_result(a: Any, b: Any) -> bool:
    """Field-by-field equality of two DiagnosisResults (NaN quality of an undecoded eye equals NaN)."""
    for name in a.get_fields_and_field_types():
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


def published_since(client: Client, start: int, settle: float = 0.5) -> list[Any]:
    client.spin_for(settle)
    return client.results[start:]


def assert_idle_and_serving(client: Client, exams: ExamClient, node: NodeProcess) -> None:
    """The node accepts the next goal at once and still diagnoses (and publishes it)."""
    start = len(client.results)
    status, result = exams.result(exams.send(inline_goal("EXAM-NEXT", "556")))
    assert (status, result.outcome) == (GoalStatus.STATUS_SUCCEEDED, Result.OUTCOME_OK), (
        result.reason, node.log_text()[-2000:])
    assert client.spin_until(lambda: any(r.exam_id == "EXAM-NEXT" for r in client.results[start:]), 5.0)
    assert node.proc.poll() is None


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
def test_inline_goal_result_is_the_diagnosis_published(served, tiny_bundle, compressed):
    client, exams, node = served
    start = len(client.results)
    run = exams.send(inline_goal("EXAM-INLINE", compressed=compressed))
    status, result = exams.result(run)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.outcome == Result.OUTCOME_OK, result.reason
    diag = result.diagnosis
    assert diag.status == DiagnosisResult.STATUS_OK and diag.exam_id == "EXAM-INLINE" and result.reason == diag.summary
    expected = offline_probabilities(tiny_bundle, sample_rgb("951", "left"), sample_rgb("951", "right"))
    np.testing.assert_allclose(diag.probabilities, expected, atol=1e-5)  # bgr8 and png are lossless: same as offline
    # one pipeline, one result: the very same message went out on `diagnosis`
    published = published_since(client, start)
    assert len(published) == 1 and same_result(published[0], diag)
    assert client.spin_until(lambda: len(run.feedback) >= 3, 3.0)
    assert run.stages() == [Feedback.STAGE_QUEUED, Feedback.STAGE_GRADING, Feedback.STAGE_INFERRING]
    assert all(f.left_received and f.right_received for f in run.feedback)


def test_camera_goal_takes_the_first_pair_and_gives_it_its_exam_id(served, tiny_bundle):
    client, exams, node = served
    start = len(client.results)
    run = exams.send(Goal(exam_id="EXAM-CAM", timeout_s=20.0))  # source 0: the camera topics
    first = exams.wait_feedback(run, Feedback.STAGE_WAITING_FOR_EYES)
    assert not first.left_received and not first.right_received
    left, right = camera_pair("583")
    stamp = CLOCK.next()
    client.publish("left", left, stamp)
    waiting = exams.wait_feedback(run, Feedback.STAGE_WAITING_FOR_RIGHT)
    assert waiting.left_received and not waiting.right_received and waiting.stage_name == "waiting for right eye"
    client.publish("right", right, stamp + 10_000_000)
    status, result = exams.result(run)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.outcome == Result.OUTCOME_OK, result.reason
    assert result.diagnosis.exam_id == "EXAM-CAM"
    np.testing.assert_allclose(result.diagnosis.probabilities,
                               offline_probabilities(tiny_bundle, sample_rgb("583", "left"),
                                                     sample_rgb("583", "right")), atol=1e-5)
    assert client.spin_until(lambda: len(run.feedback) >= 5, 3.0)
    assert run.stages() == [Feedback.STAGE_WAITING_FOR_EYES, Feedback.STAGE_WAITING_FOR_RIGHT, Feedback.STAGE_QUEUED,
                            Feedback.STAGE_GRADING, Feedback.STAGE_INFERRING]
    published = published_since(client, start)
    assert len(published) == 1 and same_result(published[0], result.diagnosis)
    # the goal took one pair: the next pair on the topics carries the node's own exam id again
    client.publish_pair(*camera_pair("556"), CLOCK.next())
    client.wait_results(start + 2)
    assert client.results[start + 1].exam_id == "EXAM-PARAM"


def test_timeout_publishes_nothing_and_frees_the_node_at_once(served):
    client, exams, node = served
    start = len(client.results)
    status, result = exams.result(exams.send(Goal(exam_id="EXAM-LATE", timeout_s=1.0)))
    assert status == GoalStatus.STATUS_ABORTED and result.outcome == Result.OUTCOME_TIMEOUT
    assert result.reason.startswith("no result within 1 s (waiting for both eyes): no eye image arrived")
    assert result.diagnosis.exam_id == "EXAM-LATE" and result.diagnosis.status == DiagnosisResult.STATUS_ERROR
    assert published_since(client, start) == []
    assert_idle_and_serving(client, exams, node)


def test_cancel_mid_wait_publishes_nothing_and_frees_the_node(served):
    client, exams, node = served
    start = len(client.results)
    run = exams.send(Goal(exam_id="EXAM-CANCEL", timeout_s=20.0))
    exams.wait_feedback(run, Feedback.STAGE_WAITING_FOR_EYES)
    left, _ = camera_pair()
    client.publish("left", left, CLOCK.next())
    exams.wait_feedback(run, Feedback.STAGE_WAITING_FOR_RIGHT)
    cancel = run.handle.cancel_goal_async()
    assert client.spin_until(cancel.done, 10.0)
    assert len(cancel.result().goals_canceling) == 1
    status, result = exams.result(run)
    assert status == GoalStatus.STATUS_CANCELED and result.outcome == Result.OUTCOME_CANCELED
    assert result.reason.startswith("canceled by the client after") and "(waiting for right eye)" in result.reason
    # the canceled exam's left eye expires from the pairer (pair_timeout_s 1 s): counted, never published
    drops_before = int(client.diagnostics[-1].get("drops_unpaired_timeout", 0)) if client.diagnostics else 0
    assert client.spin_until(lambda: client.diagnostics
                             and int(client.diagnostics[-1].get("drops_unpaired_timeout", 0)) > drops_before, 6.0)
    assert published_since(client, start) == []
    assert "'EXAM-CANCEL' (CANCELED): right eye never arrived" in node.log_text()
    assert_idle_and_serving(client, exams, node)


def test_second_goal_is_rejected_with_a_reason_and_the_first_goes_on(served):
    client, exams, node = served
    first = exams.send(Goal(exam_id="EXAM-FIRST", timeout_s=20.0))
    exams.wait_feedback(first, Feedback.STAGE_WAITING_FOR_EYES)
    status, second = exams.result(exams.send(inline_goal("EXAM-SECOND")))
    assert status == GoalStatus.STATUS_ABORTED and second.outcome == Result.OUTCOME_REJECTED
    assert (second.reason.startswith("busy with exam 'EXAM-FIRST'")
            and "wait for its result or cancel it" in second.reason)
    assert second.diagnosis.exam_id == "EXAM-SECOND" and second.diagnosis.summary.startswith("REJECTED: busy")
    client.publish_pair(*camera_pair(), CLOCK.next())
    status, result = exams.result(first)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.diagnosis.exam_id == "EXAM-FIRST"


@pytest.mark.parametrize(
    "goal, needle",
    [
        (Goal(exam_id="", source=Goal.SOURCE_CAMERAS), "exam_id is empty"),
        (Goal(exam_id="EXAM-BAD", source=7), "source 7 unknown: use SOURCE_CAMERAS (0)"),
        (Goal(exam_id="EXAM-BAD", source=Goal.SOURCE_IMAGES), "left_image and right_image not set"),
        (Goal(exam_id="EXAM-BAD", timeout_s=-1.0), "timeout_s must be a number >= 0"),
    ],
    ids=["empty_exam_id", "unknown_source", "images_missing", "negative_timeout"],
)
def test_malformed_goal_is_rejected_with_a_reason(served, goal, needle):
    client, exams, node = served
    status, result = exams.result(exams.send(goal))
    assert status == GoalStatus.STATUS_ABORTED and result.outcome == Result.OUTCOME_REJECTED
    assert needle in result.reason


@pytest.mark.parametrize("case", ["unknown_encoding", "corrupt_jpeg", "too_large"])
def test_bad_inline_image_gives_error_result_and_node_keeps_serving(served, case):
    client, exams, node = served
    start = len(client.results)
    goal = inline_goal("EXAM-BADIMG", compressed=case == "corrupt_jpeg")
    if case == "unknown_encoding":
        goal.left_image.encoding, needle = "yuv422_weird", "left eye: unsupported image encoding 'yuv422_weird'"
    elif case == "corrupt_jpeg":
        jpeg = bytes(rgb_to_compressed_msg(sample_rgb("951", "right"), "jpeg").data)
        goal.right_compressed.format, goal.right_compressed.data = "jpeg", b"\x00" * 64 + jpeg[64: len(jpeg) // 3]
        needle = "right eye: "
    else:
        goal.right_image = rgb_to_image_msg(np.zeros((700, 700, 3), np.uint8), "rgb8")
        needle = "max_pixels"
    status, result = exams.result(exams.send(goal))
    assert status == GoalStatus.STATUS_ABORTED and result.outcome == Result.OUTCOME_ERROR
    assert needle in result.reason and result.reason == result.diagnosis.status_message
    if case == "corrupt_jpeg":
        assert "corrupt" in result.reason
    published = published_since(client, start)
    assert len(published) == 1 and same_result(published[0], result.diagnosis) and published[0].exam_id == "EXAM-BADIMG"
    assert_idle_and_serving(client, exams, node)


def test_unpaired_eye_ends_camera_goal_with_the_pipelines_error(served):
    client, exams, node = served
    start = len(client.results)
    run = exams.send(Goal(exam_id="EXAM-ONE-EYE", timeout_s=20.0))
    exams.wait_feedback(run, Feedback.STAGE_WAITING_FOR_EYES)
    client.publish("left", camera_pair()[0], CLOCK.next())
    status, result = exams.result(run)  # pair_timeout_s (1 s) is shorter than the goal's timeout
    assert status == GoalStatus.STATUS_ABORTED and result.outcome == Result.OUTCOME_ERROR
    assert "right eye never arrived" in result.reason and result.diagnosis.exam_id == "EXAM-ONE-EYE"
    published = published_since(client, start)
    assert len(published) == 1 and same_result(published[0], result.diagnosis)


def _change_state(client: Client, ns: str, transition_id: int) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    service = client.node.create_client(ChangeState, f"{ns}/{NODE}/change_state")
    try:
        assert client.spin_until(service.service_is_ready, 10.0)
        future = service.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert client.spin_until(future.done, 30.0) and future.result().success
    finally:
        client.node.destroy_client(service)


def test_goals_run_only_while_active(tiny_bundle, ros_domain, ros_namespace, tmp_path):
    from lifecycle_msgs.msg import Transition

    ns = ros_namespace
    node = NodeProcess(node_command(tiny_bundle, ns, {"autostart": False}), tmp_path / "node.log")
    client = None
    try:
        client = Client(ns)
        exams = ExamClient(client)
        exams.wait_for_server(node)  # the server exists in every state, so a refusal can say why
        status, result = exams.result(exams.send(inline_goal("EXAM-EARLY")))
        assert (status, result.outcome) == (GoalStatus.STATUS_ABORTED, Result.OUTCOME_REJECTED)
        assert result.reason.startswith("the node is unconfigured, not active: activate it")

        _change_state(client, ns, Transition.TRANSITION_CONFIGURE)
        status, result = exams.result(exams.send(inline_goal("EXAM-INACTIVE")))
        assert (result.outcome == Result.OUTCOME_REJECTED
                and result.reason.startswith("the node is inactive, not active"))

        _change_state(client, ns, Transition.TRANSITION_ACTIVATE)
        client.wait_for_node(node)
        start = len(client.results)
        waiting = exams.send(Goal(exam_id="EXAM-DEACTIVATED", timeout_s=20.0))
        exams.wait_feedback(waiting, Feedback.STAGE_WAITING_FOR_EYES)
        _change_state(client, ns, Transition.TRANSITION_DEACTIVATE)  # ends the waiting goal at once
        status, result = exams.result(waiting, timeout=5.0)
        assert (status, result.outcome) == (GoalStatus.STATUS_ABORTED, Result.OUTCOME_ERROR)
        assert "left the active state before the exam finished" in result.reason
        assert published_since(client, start) == []

        _change_state(client, ns, Transition.TRANSITION_ACTIVATE)
        status, result = exams.result(exams.send(inline_goal("EXAM-AGAIN")))
        assert result.outcome == Result.OUTCOME_OK, result.reason
    finally:
        if client is not None:
            client.close()
        node.stop()


def test_ros2_action_send_goal(served):
    """`ros2 action send_goal` (ros2cli from ../shared/ros2-launch) drives the action too."""
    client, exams, node = served
    ros2 = shutil.which("ros2")
    try:
        import ros2action  # noqa: F401
    except ImportError:
        ros2 = None
    if ros2 is None:
        pytest.skip("the ros2 CLI with ros2action is not installed: "
                    "pip install --no-deps ../shared/ros2-launch/wheels/*.whl")
    start = len(client.results)
    cmd = [ros2, "action", "send_goal", "--feedback", f"{client.namespace}/diagnose_exam",
           "dms_net_ros/action/DiagnoseExam", "{exam_id: EXAM-CLI, timeout_s: 30.0}"]
    cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                           env=dict(os.environ))
    try:
        # the goal waits on the camera topics: play the camera once the node has claimed it
        assert client.spin_until(lambda: "'EXAM-CLI': goal accepted" in node.log_text() or cli.poll() is not None,
                                 30.0), node.log_text()[-2000:]
        client.publish_pair(*camera_pair("556"), CLOCK.next())
        out, _ = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(5)
    assert cli.returncode == 0, out
    # the first feedback ("waiting for both eyes") can precede the CLI's feedback subscription
    # being matched on a loaded machine; the stage sequence itself is held by the rclpy tests above
    assert "Goal accepted" in out and "stage_name: inferring" in out
    assert "outcome: 0" in out and "exam_id: EXAM-CLI" in out and "Goal finished with status: SUCCEEDED" in out
    published = published_since(client, start)
    assert len(published) == 1 and published[0].exam_id == "EXAM-CLI"
