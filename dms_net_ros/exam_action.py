"""The node's ``diagnose_exam`` action server (dms_net_ros/action/DiagnoseExam).

A robot workflow says "diagnose exam X" and waits, with a timeout, a way to cancel and
progress to show; the node's one pipeline does the work (camera pairs from the pairer, or
the goal's inline pair, through the same worker and result builders as the topics), and the
result it makes goes both to the goal and to the ``diagnosis`` topic. Which goal owns the
pipeline, and the one-exam-at-a-time rules, live in `exam_slot.ExamSlot`; this module only
speaks the action protocol:

* Every goal is *accepted* at the protocol level and then decided, because a ROS 2 goal
  rejection cannot carry a reason: a goal that cannot run ends at once as ABORTED with
  outcome REJECTED and a one-line reason (node not active, another exam running, bad goal).
* The server exists in every lifecycle state, so a goal to an inactive node gets that
  reason instead of a client timing out on a missing server.
* The execute callback is a coroutine that awaits the exam's end without blocking the
  node's single-threaded executor. The worker thread never touches the action API: it
  updates the slot, which triggers a guard condition; the guard's callback (executor
  thread) sends feedback and wakes the waiting goal.
* A timer per goal enforces ``timeout_s``; cancel is accepted while the exam runs. Both
  free the node at once and publish nothing on ``diagnosis`` (`ExamSlot` rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future

from dms_net_ros.action import DiagnoseExam
from dms_net_ros.exam_slot import STAGE_NAMES, ExamSlot, ExamTicket, Outcome, Progress, timeout_reason, validate_timeout
from dms_net_ros.messages import ResultContext, error_result

ACTION_NAME = "diagnose_exam"
SOURCE_NAMES = {
    DiagnoseExam.Goal.SOURCE_CAMERAS: "camera topics",
    DiagnoseExam.Goal.SOURCE_IMAGES: "inline Image pair",
    DiagnoseExam.Goal.SOURCE_COMPRESSED: "inline CompressedImage pair",
}

#: submit(ticket, left_msg, right_msg) -> None, or why the pair could not be queued
SubmitPair = Callable[[ExamTicket, Any, Any], "str | None"]


@dataclass
class _RunningGoal:
    goal_handle: Any
    ticket: ExamTicket
    finished: Future
    feedback_sent: int = 0  # steps of ticket.progress already sent


def inline_pair(goal: Any, stamp: Any) -> tuple[Any, Any]:
    """The goal's own left/right messages (SOURCE_IMAGES or SOURCE_COMPRESSED).

    A zero header stamp becomes ``stamp`` (the acceptance time), so the result is stamped
    even when a workflow sends bare images.
    """
    if goal.source == DiagnoseExam.Goal.SOURCE_IMAGES:
        left, right = goal.left_image, goal.right_image
    else:
        left, right = goal.left_compressed, goal.right_compressed
    for msg in (left, right):
        if msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0:
            msg.header.stamp = stamp
    return left, right


def feedback_message(step: Progress) -> Any:
    feedback = DiagnoseExam.Feedback()
    feedback.stage = int(step.stage)
    feedback.stage_name = STAGE_NAMES[step.stage]
    feedback.left_received = bool(step.left_received)
    feedback.right_received = bool(step.right_received)
    feedback.elapsed_s = float(step.elapsed_s)
    return feedback


def _unset(msg: Any) -> bool:
    """An Image/CompressedImage left at its defaults: no data and no encoding/format."""
    return len(msg.data) == 0 and not getattr(msg, "encoding", "") and not getattr(msg, "format", "")


def check_goal(goal: Any) -> str | None:
    """Why a goal cannot run as sent (bad source, empty exam id, inline image missing), or None.

    Only the goal's form is checked here; what is inside an inline image (encoding, size,
    corrupt JPEG) is the pipeline's to judge, and a bad one gives an ERROR result.
    """
    if goal.source not in SOURCE_NAMES:
        return (f"source {goal.source} unknown: use SOURCE_CAMERAS (0), SOURCE_IMAGES (1) "
                "or SOURCE_COMPRESSED (2)")
    if not goal.exam_id.strip():
        return "exam_id is empty: every exam needs an id that ties its result to it"
    if goal.source == DiagnoseExam.Goal.SOURCE_IMAGES:
        fields, other = ("left_image", "right_image"), "SOURCE_COMPRESSED with left_compressed/right_compressed"
    elif goal.source == DiagnoseExam.Goal.SOURCE_COMPRESSED:
        fields, other = ("left_compressed", "right_compressed"), "SOURCE_IMAGES with left_image/right_image"
    else:
        return None
    missing = [name for name in fields if _unset(getattr(goal, name))]
    if missing:
        return f"source {SOURCE_NAMES[goal.source]} but {' and '.join(missing)} not set: fill them, or send {other}"
    return None


class ExamActionServer:
    """``<ns>/diagnose_exam``: the DiagnoseExam action of one diagnosis node.

    ``submit_pair`` queues an inline pair on the node's pipeline; ``default_timeout_s`` and
    ``state_label`` read the node's ``exam_timeout_s`` parameter and lifecycle state when a
    goal arrives. The node reports images, pairs, stages and results to `slot`.
    """

    def __init__(
        self,
        node: Any,
        *,
        submit_pair: SubmitPair,
        default_timeout_s: Callable[[], float],
        state_label: Callable[[], str],
        name: str = ACTION_NAME,
    ) -> None:
        self._node = node
        self._submit_pair = submit_pair
        self._default_timeout_s = default_timeout_s
        self._state_label = state_label
        self._running: dict[bytes, _RunningGoal] = {}
        self._wake_guard = node.create_guard_condition(self._on_wake)
        self.slot = ExamSlot(wake=self._wake)
        self._server = ActionServer(
            node,
            DiagnoseExam,
            name,
            execute_callback=self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,  # decided in _execute, where a reason can be returned
            cancel_callback=self._on_cancel,
        )

    def destroy(self) -> None:
        """End running exams and remove the server (the node is shutting down)."""
        self.slot.close("the node is shutting down")
        self._server.destroy()
        self._node.destroy_guard_condition(self._wake_guard)
        self._wake_guard = None

    # -- any thread ----------------------------------------------------------------------
    def _wake(self) -> None:
        guard = self._wake_guard
        if guard is not None:
            try:
                guard.trigger()
            except Exception:  # noqa: BLE001 - destroyed during shutdown: nobody is waiting any more
                pass

    # -- executor thread -----------------------------------------------------------------
    def _on_wake(self) -> None:
        """Send the feedback steps not sent yet, in order; wake goals whose exam ended."""
        for running in list(self._running.values()):
            self._send_feedback(running)
            if running.ticket.done and not running.finished.done():
                running.finished.set_result(None)

    def _send_feedback(self, running: _RunningGoal) -> None:
        steps = running.ticket.progress[running.feedback_sent:]  # appended under the slot's lock; a slice is a snapshot
        running.feedback_sent += len(steps)
        for step in steps:
            running.goal_handle.publish_feedback(feedback_message(step))

    def _on_cancel(self, goal_handle: Any) -> CancelResponse:
        running = self._running.get(bytes(goal_handle.goal_id.uuid))
        if running is None:
            # accepted but not started yet: _execute sees the request and ends it as CANCELED
            return CancelResponse.ACCEPT if goal_handle.is_active else CancelResponse.REJECT
        ticket = running.ticket
        reason = (f"canceled by the client after {ticket.elapsed_s():.1f} s ({STAGE_NAMES[ticket.stage]}); "
                  "nothing was published")
        if self.slot.finish(ticket, Outcome.CANCELED, reason):
            return CancelResponse.ACCEPT
        return CancelResponse.REJECT  # its result was already made

    def _admit(self, goal: Any) -> ExamTicket | str:
        if not self.slot.accepting:
            return (f"the node is {self._state_label()}, not active: "
                    "activate it (lifecycle change_state) and send the goal again")
        problem = check_goal(goal)
        if problem is not None:
            return problem
        try:
            timeout_s = validate_timeout(goal.timeout_s, self._default_timeout_s())
        except ValueError as exc:
            return str(exc)
        return self.slot.claim(goal.exam_id, goal.source == DiagnoseExam.Goal.SOURCE_CAMERAS, timeout_s)

    async def _execute(self, goal_handle: Any) -> Any:
        goal = goal_handle.request
        log = self._node.get_logger()
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            return self._result(Outcome.CANCELED, "canceled by the client before it started; nothing was published",
                                goal.exam_id)
        admitted = self._admit(goal)
        if isinstance(admitted, str):
            log.warning(f"exam {goal.exam_id!r} rejected: {admitted}")
            goal_handle.abort()
            return self._result(Outcome.REJECTED, admitted, goal.exam_id)

        ticket = admitted
        log.info(f"exam {ticket.exam_id!r}: goal accepted "
                 f"({SOURCE_NAMES[goal.source]}, timeout {ticket.timeout_s:g} s)")
        running = _RunningGoal(goal_handle, ticket, Future())
        key = bytes(goal_handle.goal_id.uuid)
        self._running[key] = running
        timer = self._node.create_timer(ticket.timeout_s, lambda: self._on_timeout(ticket))
        try:
            self._send_feedback(running)
            if not ticket.from_cameras:
                left, right = inline_pair(goal, self._node.get_clock().now().to_msg())
                problem = self._submit_pair(ticket, left, right)
                if problem is not None:
                    self.slot.finish(ticket, Outcome.ERROR, problem)
            if not ticket.done:
                await running.finished
        finally:
            self._node.destroy_timer(timer)
            del self._running[key]
        return self._conclude(goal_handle, ticket)

    def _on_timeout(self, ticket: ExamTicket) -> None:
        self.slot.finish(ticket, Outcome.TIMEOUT, timeout_reason(ticket))  # _conclude logs it

    def _conclude(self, goal_handle: Any, ticket: ExamTicket) -> Any:
        """Put the goal in its terminal state and build its result."""
        outcome = ticket.outcome
        assert outcome is not None
        if outcome in (Outcome.OK, Outcome.UNGRADABLE):
            goal_handle.succeed()
        elif outcome == Outcome.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        line = f"exam {ticket.exam_id!r}: {outcome.name} after {ticket.elapsed_s():.2f} s: {ticket.reason}"
        if outcome in (Outcome.OK, Outcome.UNGRADABLE, Outcome.CANCELED):
            self._node.get_logger().info(line)
        else:
            self._node.get_logger().warning(line)
        return self._result(outcome, ticket.reason, ticket.exam_id, ticket.diagnosis)

    def _result(self, outcome: Outcome, reason: str, exam_id: str, diagnosis: Any = None) -> Any:
        result = DiagnoseExam.Result()
        result.outcome = int(outcome)
        result.reason = reason
        if diagnosis is None:  # nothing was made or published: say so in the embedded message too
            diagnosis = error_result(ResultContext(exam_id=exam_id), reason)
            diagnosis.summary = f"{outcome.name}: {reason}"
        result.diagnosis = diagnosis
        return result
