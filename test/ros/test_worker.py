"""Drop-oldest worker: bounded queue, counted evictions, survives failing jobs (no ROS)."""

from __future__ import annotations

import threading

from dms_net_ros.worker import DropOldestWorker


def test_overflow_drops_oldest_and_accounts_for_every_job():
    gate, started = threading.Event(), threading.Event()
    done, dropped = [], []

    def handler(job):
        started.set()
        gate.wait(5)
        done.append(job)

    w = DropOldestWorker(handler, maxsize=2, on_drop=dropped.append)
    try:
        w.submit(0)  # taken by the thread, blocks on the gate
        assert started.wait(5) and w.wait_idle(0.05) is False
        for job in range(1, 8):
            w.submit(job)
        assert w.depth == 2
        gate.set()
        assert w.wait_idle(5)
    finally:
        w.stop()
    assert dropped == [1, 2, 3, 4, 5] and w.dropped == 5
    assert done == [0, 6, 7]  # the freshest jobs survive
    assert w.submitted == len(done) + w.dropped == 8


def test_handler_exception_is_reported_and_worker_keeps_serving():
    errors, done = [], []

    def handler(job):
        if job == "bad":
            raise RuntimeError("boom")
        done.append(job)

    w = DropOldestWorker(handler, maxsize=4, on_error=lambda job, exc: errors.append((job, str(exc))))
    try:
        w.submit("bad")
        w.submit("good")
        assert w.wait_idle(5)
    finally:
        pending = w.stop()
    assert errors == [("bad", "boom")] and done == ["good"] and pending == []
