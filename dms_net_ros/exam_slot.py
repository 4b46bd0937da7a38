"""One exam at a time: which DiagnoseExam goal owns the node's pipeline, and how far it got.

No rclpy here: `exam_action.py` turns goals into calls on an `ExamSlot`, and the node's
image callback and inference worker report to it. Two threads use one slot (the executor
thread: goals, cancels, timers, image callbacks; the worker thread: stages and results), so
every change happens under one lock and then calls ``wake`` (the action server triggers a
guard condition with it, so feedback and results reach the action API on the executor
thread only).

Rules (the README states them to users):

* **One exam at a time.** `claim` returns a ticket, or, while another exam is running, the
  reason it refuses. Goals are rejected, not queued: a workflow that must wait can retry,
  and a queued goal would spend its timeout behind another exam.
* **Camera exams.** Every eye image received after the claim belongs to the exam until its
  pair is complete (`note_image`, called after the pairer saw the image); the first complete
  pair after the claim is the exam's (`take_pair`). If the pipeline instead reports one of
  the exam's images as unpaired (the other eye never arrived, a stale stamp), that ERROR
  result is the exam's (`unpaired_owner`).
* **First finish wins.** `finish` ends a ticket once (result, timeout, cancel or deactivation,
  whichever comes first) and frees the slot at once, so the next goal is accepted without
  waiting for work still in flight.
* **Nothing half-made.** A ticket finished without a pipeline result is *abandoned*: its job
  must publish nothing, and its images still waiting in the pairer are *orphans* the node
  drops (counted) instead of reporting them as unpaired.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

EYES = ("left", "right")


class Outcome(IntEnum):
    """How an exam ended (DiagnoseExam.Result.OUTCOME_*; OK/UNGRADABLE/ERROR equal DiagnosisResult.STATUS_*)."""

    OK = 0
    UNGRADABLE = 1
    ERROR = 2
    TIMEOUT = 3
    CANCELED = 4
    REJECTED = 5


class Stage(IntEnum):
    """Where a running exam is (DiagnoseExam.Feedback.STAGE_*)."""

    WAITING_FOR_EYES = 0
    WAITING_FOR_LEFT = 1
    WAITING_FOR_RIGHT = 2
    QUEUED = 3
    GRADING = 4
    INFERRING = 5


STAGE_NAMES = {
    Stage.WAITING_FOR_EYES: "waiting for both eyes",
    Stage.WAITING_FOR_LEFT: "waiting for left eye",
    Stage.WAITING_FOR_RIGHT: "waiting for right eye",
    Stage.QUEUED: "queued for inference",
    Stage.GRADING: "grading",
    Stage.INFERRING: "inferring",
}


@dataclass(frozen=True)
class Progress:
    """One feedback step of an exam (what DiagnoseExam.Feedback carries)."""

    stage: Stage
    left_received: bool
    right_received: bool
    elapsed_s: float


@dataclass
class ExamTicket:
    """One accepted exam. Fields change only through its `ExamSlot` (under the slot's lock)."""

    exam_id: str
    from_cameras: bool
    timeout_s: float
    accepted_at: float  # time.monotonic() at the claim
    stage: Stage = Stage.WAITING_FOR_EYES
    received: dict[str, bool] = field(default_factory=lambda: {e: False for e in EYES})
    outcome: Outcome | None = None
    reason: str = ""
    diagnosis: Any = None  # the DiagnosisResult the pipeline made for this exam, if any
    paired: bool = False
    progress: list[Progress] = field(default_factory=list)  # every step, in order: feedback sends each once
    images: set[tuple[str, int]] = field(default_factory=set)  # (eye, stamp_ns) received while waiting

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def abandoned(self) -> bool:
        """Finished without a pipeline result (timeout, cancel, deactivation, dropped job)."""
        return self.outcome is not None and self.diagnosis is None

    def elapsed_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.accepted_at

    def _step(self) -> None:
        """Record the current stage as a feedback step (caller holds the slot's lock)."""
        self.progress.append(Progress(self.stage, self.received["left"], self.received["right"], self.elapsed_s()))


def outcome_of_status(status: int) -> Outcome:
    """DiagnosisResult.status (OK 0, UNGRADABLE 1, ERROR 2) -> the exam's outcome."""
    return Outcome(status) if status in (Outcome.OK, Outcome.UNGRADABLE) else Outcome.ERROR


def timeout_reason(ticket: ExamTicket) -> str:
    """One line for a TIMEOUT: how long, where the exam was, and what to check."""
    stage = ticket.stage
    if stage == Stage.WAITING_FOR_EYES:
        hint = ("no eye image arrived: check that the cameras publish on left/image_raw and right/image_raw "
                "(QoS, remaps, image_transport)")
    elif stage in (Stage.WAITING_FOR_LEFT, Stage.WAITING_FOR_RIGHT):
        missing = "left" if stage == Stage.WAITING_FOR_LEFT else "right"
        hint = f"the {missing} eye never arrived: check the {missing} camera topic"
    else:
        hint = "the node was still processing: raise timeout_s or use a faster backend"
    return f"no result within {ticket.timeout_s:g} s ({STAGE_NAMES[stage]}): {hint}"


def validate_timeout(timeout_s: float, default_s: float) -> float:
    """The goal's timeout in seconds (0 = ``default_s``); raises ValueError naming the fix."""
    t = float(timeout_s)
    if math.isnan(t) or t < 0 or math.isinf(t):
        raise ValueError(f"timeout_s must be a number >= 0 (0 = the node's exam_timeout_s), got {timeout_s}")
    t = t or float(default_s)
    if not t > 0:
        raise ValueError(f"timeout_s is 0 and the node's exam_timeout_s is {default_s}: give the goal a timeout_s > 0")
    return t


class ExamSlot:
    """The one exam the node serves through the action; see the module docstring for the rules."""

    def __init__(self, wake: Callable[[], None] | None = None, remembered: int = 8) -> None:
        self._lock = threading.Lock()
        self._wake = wake or (lambda: None)
        self._current: ExamTicket | None = None
        self._accepting = False
        self._finished_camera_exams: deque[ExamTicket] = deque(maxlen=remembered)

    # -- lifecycle (executor thread) ------------------------------------------------------
    @property
    def accepting(self) -> bool:
        with self._lock:
            return self._accepting

    def open(self) -> None:
        """The node became active: exams may be claimed."""
        with self._lock:
            self._accepting = True

    def close(self, reason: str) -> ExamTicket | None:
        """The node leaves the active state: refuse claims; the running exam ends as ERROR ``reason``."""
        with self._lock:
            self._accepting = False
            ticket = self._current
        if ticket is not None and self.finish(ticket, Outcome.ERROR, reason):
            return ticket
        return None

    def claim(self, exam_id: str, from_cameras: bool, timeout_s: float, now: float | None = None) -> ExamTicket | str:
        """A ticket for a new exam, or why not (node not active, another exam running)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._accepting:
                return "the node is not active: activate it and send the goal again"
            cur = self._current
            if cur is not None:
                return (
                    f"busy with exam {cur.exam_id!r} (accepted {now - cur.accepted_at:.1f} s ago, "
                    f"{STAGE_NAMES[cur.stage]}): one exam at a time; wait for its result or cancel it, then resend"
                )
            ticket = ExamTicket(exam_id, bool(from_cameras), float(timeout_s), now)
            if not from_cameras:
                ticket.stage = Stage.QUEUED
                ticket.received = {e: True for e in EYES}
            ticket._step()
            self._current = ticket
            return ticket

    @property
    def current(self) -> ExamTicket | None:
        with self._lock:
            return self._current

    # -- camera path (executor thread) --------------------------------------------------
    def note_image(self, eye: str, stamp_ns: int, completes_pair: bool = False) -> ExamTicket | None:
        """An eye image arrived on a camera topic; returns the camera exam that now owns it.

        Without a pair, the stage becomes "waiting for" the other eye of this image; an image
        that ``completes_pair`` leaves the stage to `take_pair` (no "waiting" step between).
        """
        with self._lock:
            ticket = self._current
            if ticket is None or not ticket.from_cameras or ticket.paired or ticket.done:
                return None
            ticket.images.add((eye, int(stamp_ns)))
            changed = False
            if not completes_pair:
                stage = Stage.WAITING_FOR_RIGHT if eye == "left" else Stage.WAITING_FOR_LEFT
                changed = not ticket.received[eye] or ticket.stage != stage
                ticket.received[eye] = True
                ticket.stage = stage
                if changed:
                    ticket._step()
        if changed:
            self._wake()
        return ticket

    def take_pair(self) -> ExamTicket | None:
        """A complete pair left the pairer: the waiting camera exam takes it (None: no such exam)."""
        with self._lock:
            ticket = self._current
            if ticket is None or not ticket.from_cameras or ticket.paired or ticket.done:
                return None
            ticket.paired = True
            ticket.received = {e: True for e in EYES}
            ticket.stage = Stage.QUEUED
            ticket._step()
        self._wake()
        return ticket

    def unpaired_owner(self, eye: str, stamp_ns: int) -> ExamTicket | None:
        """The camera exam an unpaired image (eye never arrived, stale stamp) is reported to.

        * the running exam that received it and has no pair yet: the pipeline's ERROR for
          the image is that exam's result;
        * an abandoned exam that received it: the image is an orphan (``ticket.abandoned``),
          the caller drops it without a result;
        * otherwise None: an ordinary unpaired image of the camera topics.
        """
        key = (eye, int(stamp_ns))
        with self._lock:
            cur = self._current
            if cur is not None and cur.from_cameras and not cur.paired and key in cur.images:
                return cur
            for ticket in reversed(self._finished_camera_exams):
                if ticket.abandoned and key in ticket.images:
                    return ticket
        return None

    # -- worker path --------------------------------------------------------------------
    def set_stage(self, ticket: ExamTicket, stage: Stage) -> bool:
        """Move a running exam to ``stage``; False when it has already finished (stop working on it)."""
        with self._lock:
            if ticket.done:
                return False
            if ticket.stage != stage:
                ticket.stage = stage
                ticket._step()
        self._wake()
        return True

    def finish(self, ticket: ExamTicket, outcome: Outcome, reason: str, diagnosis: Any = None) -> bool:
        """End ``ticket`` (first call wins) and free the slot; False when it had already ended."""
        with self._lock:
            if ticket.done:
                return False
            ticket.outcome = Outcome(outcome)
            ticket.reason = reason
            ticket.diagnosis = diagnosis
            if self._current is ticket:
                self._current = None
            if ticket.from_cameras and ticket.images:
                self._finished_camera_exams.append(ticket)
        self._wake()
        return True

    def deliver(self, ticket: ExamTicket, diagnosis: Any) -> bool:
        """The pipeline's DiagnosisResult for this exam: finish with its status; False if abandoned."""
        text = diagnosis.summary if diagnosis.status == Outcome.OK else diagnosis.status_message
        return self.finish(ticket, outcome_of_status(int(diagnosis.status)), text, diagnosis)

