"""Unit tests (no running ROS graph) of the exam-id rules and the transport-loss counts."""

from __future__ import annotations

from dms_net_ros.exam_id import MAX_EXAM_ID_LENGTH, ExamIdState, shown
from dms_net_ros.transport_loss import SequenceGapCounter, publisher_key

A, B = b"A" * 16, b"B" * 16


def test_gaps_in_a_publishers_sequence_numbers_are_counted():
    counter = SequenceGapCounter()
    assert [counter.observe(A, n) for n in (1, 2, 5, 6, 10)] == [0, 0, 2, 0, 3]
    assert counter.observe(B, 4) == 3  # a publisher born after we subscribed: 1..3 were ours and lost
    assert counter.observe(A, 9) == 0 and counter.observe(A, 11) == 0  # reordered / late: no negative loss
    assert counter.lost == 8


def test_a_publisher_older_than_the_subscription_counts_from_its_first_delivery():
    counter = SequenceGapCounter(known_publishers=[A])
    assert counter.observe(A, 500) == 0 and counter.observe(A, 503) == 2


def test_messages_without_sequence_numbers_are_counted_as_unnumbered():
    counter = SequenceGapCounter()
    assert counter.observe(None, None) == 0 and counter.unnumbered == 1
    assert publisher_key(None) == (None, None)
    info = {"publisher_gid": {"data": A + b"\0" * 8}, "publication_sequence_number": 7}
    assert publisher_key(info) == (A, 7)


def test_the_counter_forgets_old_publishers_beyond_its_bound():
    counter = SequenceGapCounter(max_publishers=2)
    for i in range(5):
        counter.observe(bytes([i]) * 16, 1)
    assert counter.lost == 0 and len(counter._last) == 2


def test_exam_ids_apply_once_and_in_order_per_publisher():
    state = ExamIdState("PARAM")
    assert state.current.value == "PARAM"
    assert state.set("E1", A, 1) == (True, "exam_id set to 'E1'")
    assert state.set("E2", A, 2)[0]
    assert state.set("E1", A, 1) == (False, "")  # the second (latched) copy of an applied message
    assert state.set("E2", A, 2) == (False, "")
    assert state.current.value == "E2"
    assert state.set("E9", B, 1)[0] and state.current.value == "E9"  # another publisher


def test_an_over_long_exam_id_is_refused_not_truncated():
    state = ExamIdState()
    assert state.set("x" * MAX_EXAM_ID_LENGTH)[0] and not state.current.error
    changed, line = state.set("y" * (10 * 2**20))
    assert changed and "exam id of 10485760 characters refused" in line and len(line) < 300
    assert state.current.error and len(state.current.value) < 100 and state.refused_too_long == 1
    assert shown("y" * 300).endswith("...(300 chars)")
    state.set("OK-1")
    assert state.current.value == "OK-1" and not state.current.error


def test_the_two_partial_loss_counts_are_never_added():
    """Sequence gaps and Fast DDS's events overlap: /diagnostics reports the larger per eye."""
    from builtin_interfaces.msg import Time

    from dms_net_ros.diagnostics import PipelineStats, diagnostic_values, to_diagnostic_array

    stats = PipelineStats()
    stats.record_sequence_gap("left", 37)
    stats.record_dds_message_lost("left", 24)
    stats.record_dds_message_lost("right", 8)  # nothing of the right camera arrived: no gaps to see
    values = diagnostic_values(to_diagnostic_array(stats, node_name="/n", stamp=Time(), backend="onnxruntime",
                                                   engine="e", model_id="m", queue_depth=0))
    assert (values["transport_lost_left"], values["transport_lost_right"]) == ("37", "8")
    assert (values["sequence_gaps_left"], values["dds_message_lost_left"]) == ("37", "24")
