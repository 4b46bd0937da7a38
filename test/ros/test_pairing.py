"""Pure unit tests of the approximate-time pairer (no ROS)."""

from __future__ import annotations

import pytest

from dms_net_ros.pairing import ApproximateTimePairer

MS = 1_000_000
S = 1_000 * MS


def test_pairs_with_nearest_stamp_within_slop():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=5)
    assert p.add("left", 1 * S, "L1").pairs == []
    assert p.add("left", 1 * S + 150 * MS, "L2").pairs == []
    out = p.add("right", 1 * S + 120 * MS, "R")  # 120 ms from L1 (> slop), 30 ms from L2
    assert [(x.left, x.right) for x in out.pairs] == [("L2", "R")]
    assert out.pairs[0].stamp_ns == 1 * S + 150 * MS
    assert p.buffered() == {"left": 1, "right": 0}


def test_no_pair_outside_slop_and_tie_goes_to_older():
    p = ApproximateTimePairer(slop_s=0.05, queue_size=10, timeout_s=5)
    p.add("right", 10 * S, "R")
    assert p.add("left", 10 * S + 51 * MS, "L").pairs == []
    p2 = ApproximateTimePairer(slop_s=0.05, queue_size=10, timeout_s=5)
    p2.add("left", 10 * S - 20 * MS, "old")
    p2.add("left", 10 * S + 20 * MS, "new")
    assert p2.add("right", 10 * S, "R").pairs[0].left == "old"


def test_out_of_order_older_than_paired_is_dropped_but_unpaired_older_is_inserted():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=5)
    p.add("left", 5 * S, "L5")
    p.add("left", 3 * S, "L3")  # older but nothing paired yet: inserted in order
    assert p.add("right", 3 * S, "R3").pairs[0].left == "L3"
    p.add("right", 5 * S, "R5")  # pairs with L5
    out = p.add("left", 4 * S, "late")  # older than the newest paired left (5 s)
    assert out.pairs == [] and [u.reason for u in out.unpaired] == ["out_of_order"]
    assert "already paired" in out.unpaired[0].describe()
    assert p.stats.drops["out_of_order"] == 1 and p.stats.pairs == 2


def test_duplicates_are_counted_not_paired_twice():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=5)
    p.add("left", 1 * S, "L")
    assert p.add("left", 1 * S, "L again").unpaired[0].reason == "duplicate"
    p.add("right", 1 * S, "R")
    out = p.add("right", 1 * S, "R again")  # same stamp as an already-paired right
    assert out.pairs == [] and out.unpaired[0].reason == "duplicate"
    assert p.stats.drops["duplicate"] == 2


def test_unpaired_expire_by_newer_stamps_and_name_the_missing_eye():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2)
    p.add("left", 1 * S, "lonely")
    out = p.add("left", 3 * S + 1, "L3")  # newest stamp - timeout > 1 s
    assert [(u.item, u.reason, u.missing_eye) for u in out.unpaired] == [("lonely", "unpaired_timeout", "right")]
    assert "right eye never arrived" in out.unpaired[0].describe()
    late = p.add("right", 1 * S, "too late")  # behind the expiry horizon
    assert late.unpaired[0].reason == "out_of_order"


def test_expire_by_receipt_clock_reports_last_exam():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2)
    p.add("right", 7 * S, "R", received=100.0)
    assert p.expire(101.5) == []
    gone = p.expire(102.5)
    assert [(u.eye, u.missing_eye, u.reason) for u in gone] == [("right", "left", "unpaired_timeout")]
    assert p.buffered() == {"left": 0, "right": 0}


def test_memory_is_bounded_and_evictions_counted():
    p = ApproximateTimePairer(slop_s=0.01, queue_size=3, timeout_s=1000)
    evicted = []
    for i in range(50):
        evicted += p.add("left", i * S, i).unpaired
    assert p.buffered()["left"] == 3
    assert [u.item for u in evicted] == list(range(47)) and all(u.reason == "evicted" for u in evicted)
    assert p.stats.drops["evicted"] == 47


def test_accounting_invariant_on_a_messy_stream():
    import random

    rng = random.Random(0)
    p = ApproximateTimePairer(slop_s=0.05, queue_size=4, timeout_s=1.0)
    t = 0
    for _ in range(500):
        t += rng.randrange(0, 300) * MS
        eye = rng.choice(["left", "right"])
        stamp = t + rng.randrange(-200, 200) * MS
        p.add(eye, max(0, stamp), None)
        assert max(p.buffered().values()) <= 4
    s = p.stats
    assert sum(s.received.values()) == 2 * s.pairs + sum(s.drops.values()) + sum(p.buffered().values())
    assert s.pairs > 0 and s.drops["out_of_order"] > 0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateTimePairer(slop_s=-1)
    with pytest.raises(ValueError):
        ApproximateTimePairer().add("middle", 0, None)


HOUR = 3600 * S


def test_a_stamp_ahead_of_the_callers_clock_costs_that_image_only():
    """Issue 16: one image stamped an hour ahead used to make every later pair out of order."""
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2, max_ahead_s=10)
    now = 1000 * S
    assert p.add("left", 10 * S, "L", now_ns=now).pairs == []  # buffered
    out = p.add("right", 10 * S + HOUR, "future", now_ns=now)
    assert [u.reason for u in out.unpaired] == ["future_stamp"] and out.pairs == []
    assert "ahead of this node's clock" in out.unpaired[0].describe()
    assert p.add("right", 10 * S, "R", now_ns=now).pairs[0].left == "L"
    for i in range(1, 5):  # every later pair still pairs
        p.add("left", (10 + 2 * i) * S, "L", now_ns=now)
        assert len(p.add("right", (10 + 2 * i) * S, "R", now_ns=now).pairs) == 1
    assert p.stats.drops["future_stamp"] == 1 and p.stats.drops["out_of_order"] == 0


def test_an_outlying_stamp_without_a_clock_does_not_move_the_horizon():
    """Offline (no clock): the outlier waits unpaired and expires alone; later pairs pair."""
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2, max_ahead_s=10)
    p.add("left", 10 * S, "L", received=1.0)
    p.add("right", 10 * S, "R", received=1.0)
    assert p.add("left", 10 * S + HOUR, "outlier", received=1.5).unpaired == []
    for i in range(1, 4):
        p.add("left", (10 + 2 * i) * S, "L", received=1.5 + i)
        out = p.add("right", (10 + 2 * i) * S, "R", received=1.5 + i)
        assert len(out.pairs) == 1 and out.unpaired == []
    gone = p.expire(10.0)
    assert [(u.item, u.reason) for u in gone] == [("outlier", "unpaired_timeout")]
    assert p.stats.drops["out_of_order"] == 0


def test_a_pair_from_the_future_costs_one_exam_after_it_then_pairing_resumes():
    """Both cameras an hour ahead once (no clock to catch it), or a looping bag: the watermarks
    come back when a left and a right image agree on the earlier time."""
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2)
    p.add("left", 10 * S + HOUR, "Lf", received=1.0)
    assert len(p.add("right", 10 * S + HOUR, "Rf", received=1.0).pairs) == 1
    refused = p.add("left", 12 * S, "L", received=2.0).unpaired + p.add("right", 12 * S, "R", received=2.0).unpaired
    assert [u.reason for u in refused] == ["out_of_order", "out_of_order"] and p.clock_resets == 1
    for i in range(1, 4):
        p.add("left", (12 + 2 * i) * S, "L", received=2.0 + i)
        assert len(p.add("right", (12 + 2 * i) * S, "R", received=2.0 + i).pairs) == 1
    s = p.stats
    assert sum(s.received.values()) == 2 * s.pairs + sum(s.drops.values()) + sum(p.buffered().values())


def test_a_single_late_image_does_not_reset_the_clock():
    p = ApproximateTimePairer(slop_s=0.1, queue_size=10, timeout_s=2)
    p.add("left", 10 * S, "L")
    p.add("right", 10 * S, "R")
    assert p.add("left", 5 * S, "late").unpaired[0].reason == "out_of_order"
    assert p.add("right", 7 * S, "late too, other time").unpaired[0].reason == "out_of_order"
    assert p.clock_resets == 0
