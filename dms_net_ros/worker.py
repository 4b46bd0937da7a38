"""One worker thread behind a bounded queue: ROS callbacks never run the network.

Subscription callbacks only pair stamps and `submit` jobs; the worker decodes, checks
quality, preprocesses, runs inference and publishes. When inference is slower than the
camera, the queue holds at most ``maxsize`` jobs and a new job evicts the OLDEST one
(the freshest exam is the one the operator is waiting for); every eviction is counted and
handed to ``on_drop`` so the node can account for it. Exceptions raised by the handler are
passed to ``on_error`` and the worker keeps serving.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class DropOldestWorker:
    def __init__(
        self,
        handler: Callable[[Any], None],
        maxsize: int = 4,
        *,
        on_drop: Callable[[Any], None] | None = None,
        on_error: Callable[[Any, BaseException], None] | None = None,
        name: str = "dms-net-worker",
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"worker queue size must be >= 1, got {maxsize}")
        self._handler = handler
        self._on_drop = on_drop
        self._on_error = on_error
        self._queue: deque[Any] = deque()
        self._maxsize = int(maxsize)
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def unfinished(self) -> int:
        """Jobs queued or running (for the node's image accounting)."""
        with self._cond:
            return len(self._queue) + int(self._busy)

    def submit(self, job: Any) -> Any | None:
        """Queue a job; returns the job evicted to make room (already counted), or None."""
        evicted = None
        with self._cond:
            if self._stopping:
                raise RuntimeError("worker is stopped: cannot submit")
            self.submitted += 1
            if len(self._queue) >= self._maxsize:
                evicted = self._queue.popleft()
                self.dropped += 1
            self._queue.append(job)
            self._cond.notify()
        if evicted is not None and self._on_drop is not None:
            self._on_drop(evicted)
        return evicted

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and no job runs (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def stop(self, timeout: float = 10.0) -> list[Any]:
        """Finish the running job, stop the thread; returns the jobs never started."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        return pending

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._busy = True
            try:
                self._handler(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive any job
                if self._on_error is not None:
                    self._on_error(job, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.processed += 1
                    self._cond.notify_all()
