"""ExamSlot: the one-exam-at-a-time rules behind the diagnose_exam action (no DDS needed)."""

from __future__ import annotations

import math
import threading

import pytest

from test.ros.harness import require_ros

require_ros()

from dms_net_ros.exam_slot import ExamSlot, Outcome, Stage, outcome_of_status, timeout_reason, validate_timeout  # noqa: E402
from dms_net_ros.msg import DiagnosisResult  # noqa: E402


def diagnosis(status: int, text: str = "") -> DiagnosisResult:
    msg = DiagnosisResult(status=status)
    msg.summary = f"summary: {text}"
    msg.status_message = f"status: {text}"
    return msg


@pytest.fixture
def slot():
    wakes: list[int] = []
    s = ExamSlot(wake=lambda: wakes.append(1))
    s.wakes = wakes
    s.open()
    return s


def test_claims_only_while_open_and_one_at_a_time(slot):
    closed = ExamSlot()
    assert "not active" in closed.claim("A", True, 5.0)
    first = slot.claim("A", True, 5.0, now=100.0)
    busy = slot.claim("B", False, 5.0, now=102.5)
    assert (isinstance(busy, str) and "busy with exam 'A'" in busy and "2.5 s ago" in busy
            and "waiting for both eyes" in busy)
    assert slot.current is first
    assert slot.finish(first, Outcome.TIMEOUT, "late")
    assert slot.current is None  # freed at once: the next goal runs
    second = slot.claim("B", False, 5.0)
    assert not isinstance(second, str) and second.exam_id == "B"


def test_camera_exam_progress_is_recorded_step_by_step(slot):
    ticket = slot.claim("A", True, 5.0)
    assert slot.note_image("left", 10) is ticket
    assert slot.note_image("left", 11) is ticket  # a second left image changes nothing visible
    assert slot.note_image("right", 12, completes_pair=True) is ticket  # no "waiting for left" step before the pair
    assert slot.take_pair() is ticket
    assert slot.take_pair() is None  # the exam takes one pair; the next goes to the topic as usual
    assert slot.set_stage(ticket, Stage.GRADING) and slot.set_stage(ticket, Stage.INFERRING)
    steps = [(p.stage, p.left_received, p.right_received) for p in ticket.progress]
    assert steps == [
        (Stage.WAITING_FOR_EYES, False, False),
        (Stage.WAITING_FOR_RIGHT, True, False),
        (Stage.QUEUED, True, True),
        (Stage.GRADING, True, True),
        (Stage.INFERRING, True, True),
    ]
    assert [p.elapsed_s for p in ticket.progress] == sorted(p.elapsed_s for p in ticket.progress)
    assert len(slot.wakes) == 4  # every change after the claim wakes the action server
    assert slot.deliver(ticket, diagnosis(DiagnosisResult.STATUS_OK, "fine"))
    assert ticket.outcome == Outcome.OK and ticket.reason == "summary: fine" and not ticket.abandoned


def test_inline_exam_starts_queued_with_both_eyes(slot):
    ticket = slot.claim("A", False, 5.0)
    assert ticket.stage == Stage.QUEUED and ticket.received == {"left": True, "right": True}
    assert slot.note_image("left", 1) is None and slot.take_pair() is None  # camera images are not an inline exam's


def test_first_finish_wins_and_an_abandoned_exam_stops_its_job(slot):
    ticket = slot.claim("A", True, 5.0)
    slot.take_pair()
    assert slot.finish(ticket, Outcome.CANCELED, "canceled")
    assert ticket.abandoned
    assert not slot.set_stage(ticket, Stage.INFERRING)  # the worker stops working on it
    assert not slot.deliver(ticket, diagnosis(DiagnosisResult.STATUS_OK))  # its result is not published
    assert ticket.outcome == Outcome.CANCELED and ticket.diagnosis is None


def test_concurrent_finishers_end_an_exam_exactly_once(slot):
    ticket = slot.claim("A", True, 5.0)
    wins: list[Outcome] = []
    barrier = threading.Barrier(8)

    def finisher(outcome: Outcome) -> None:
        barrier.wait()
        if slot.finish(ticket, outcome, outcome.name):
            wins.append(outcome)

    threads = [threading.Thread(target=finisher, args=(o,)) for o in [Outcome.TIMEOUT, Outcome.CANCELED] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and ticket.outcome == wins[0] and ticket.reason == wins[0].name


def test_unpaired_image_routing(slot):
    ticket = slot.claim("A", True, 5.0)
    slot.note_image("left", 10)
    assert slot.unpaired_owner("left", 10) is ticket  # the exam's image never found its pair: its ERROR is the exam's
    assert slot.unpaired_owner("left", 99) is None  # an image from before the goal: an ordinary unpaired image
    slot.take_pair()
    assert slot.unpaired_owner("left", 10) is None  # the exam has its pair: a stray image is not its result
    slot.deliver(ticket, diagnosis(DiagnosisResult.STATUS_OK))

    canceled = slot.claim("B", True, 5.0)
    slot.note_image("right", 20)
    slot.finish(canceled, Outcome.CANCELED, "canceled")
    orphan = slot.unpaired_owner("right", 20)
    assert orphan is canceled and orphan.abandoned  # the node drops it: nothing half-made is published


def test_close_ends_the_running_exam_and_refuses_new_ones(slot):
    ticket = slot.claim("A", True, 5.0)
    assert slot.close("deactivated") is ticket
    assert ticket.outcome == Outcome.ERROR and ticket.reason == "deactivated" and ticket.abandoned
    assert "not active" in slot.claim("B", True, 5.0)
    assert slot.close("again") is None


def test_timeout_validation_and_reasons():
    assert validate_timeout(0.0, 30.0) == 30.0 and validate_timeout(2.5, 30.0) == 2.5
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout_s must be a number >= 0"):
            validate_timeout(bad, 30.0)
    with pytest.raises(ValueError, match="exam_timeout_s is 0.0"):
        validate_timeout(0.0, 0.0)

    slot = ExamSlot()
    slot.open()
    ticket = slot.claim("A", True, 2.0)
    assert timeout_reason(ticket) == ("no result within 2 s (waiting for both eyes): no eye image arrived: "
                                      "check that the cameras publish on left/image_raw and right/image_raw "
                                      "(QoS, remaps, image_transport)")
    slot.note_image("right", 5)
    assert "(waiting for left eye): the left eye never arrived: check the left camera topic" in timeout_reason(ticket)
    slot.take_pair()
    slot.set_stage(ticket, Stage.INFERRING)
    assert "(inferring): the node was still processing: raise timeout_s" in timeout_reason(ticket)


def test_outcome_of_status_matches_the_message_constants():
    assert outcome_of_status(DiagnosisResult.STATUS_OK) == Outcome.OK
    assert outcome_of_status(DiagnosisResult.STATUS_UNGRADABLE) == Outcome.UNGRADABLE
    assert outcome_of_status(DiagnosisResult.STATUS_ERROR) == Outcome.ERROR
    from dms_net_ros.action import DiagnoseExam

    assert {o.name: int(o) for o in Outcome} == {n[len("OUTCOME_"):]: getattr(DiagnoseExam.Result, n)
                                                 for n in dir(DiagnoseExam.Result) if n.startswith("OUTCOME_")}
    assert {s.name: int(s) for s in Stage} == {n[len("STAGE_"):]: getattr(DiagnoseExam.Feedback, n)
                                               for n in dir(DiagnoseExam.Feedback) if n.startswith("STAGE_")}
