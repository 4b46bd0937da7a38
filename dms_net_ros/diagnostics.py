"""Rolling pipeline statistics -> ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics``.

`PipelineStats` is plain Python (thread-safe: the worker records, a timer publishes):
result counts by status, drops by reason (pairing and worker queue), transport losses per
eye, a window of recent latencies for p50/p95 and result times for the rate.
`to_diagnostic_array` turns a snapshot into the standard message that rqt_robot_monitor and
diagnostic_aggregator read. Level: ERROR when no backend is loaded, WARN when inputs were
dropped or lost or errors published since the previous report, OK otherwise.

Image accounting (the README's rule): every image published to the node ends in exactly
one of a result, a counted drop or a counted transport loss. The report shows it in images:
``received_left + received_right == images_in_results + images_dropped + images_pending``
(exact whenever the node is idle), and ``transport_lost_<eye>`` counts the images that were
published and never received: the larger of two counts that each see part of the loss and
overlap, ``sequence_gaps_<eye>`` (gaps in the publishers' sequence numbers, `transport_loss`:
exact once a later image of that publisher arrives) and ``dds_message_lost_<eye>`` (Fast
DDS's message-lost events: the only count when nothing of a publisher ever arrives).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

STATUS_NAMES = {0: "ok", 1: "ungradable", 2: "error"}


class PipelineStats:
    def __init__(self, window: int = 200, rate_window_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._result_times: deque[float] = deque(maxlen=10_000)
        self.rate_window_s = rate_window_s
        self.results: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.sequence_gaps: Counter[str] = Counter()
        self.dds_message_lost: Counter[str] = Counter()
        self.images_in_results = 0
        self.images_dropped = 0
        self._last_reported_problems = 0

    def record_received(self, eye: str) -> None:
        with self._lock:
            self.received[eye] += 1

    def record_result(self, status: int, total_ms: float | None = None, now: float | None = None, *,
                      images: int = 2) -> None:
        """One published result covering ``images`` input images (a pair: 2; an unpaired eye: 1)."""
        with self._lock:
            self.results[STATUS_NAMES.get(status, str(status))] += 1
            self.images_in_results += images
            self._result_times.append(time.monotonic() if now is None else now)
            if total_ms is not None and status == 0:
                self._latencies.append(float(total_ms))

    def record_drop(self, reason: str, count: int = 1, *, images: int | None = None) -> None:
        """``count`` drops for ``reason`` covering ``images`` input images (default: one each)."""
        with self._lock:
            self.drops[reason] += count
            self.images_dropped += count if images is None else images

    def record_sequence_gap(self, eye: str, count: int) -> None:
        """Images of ``eye`` published and never received, from sequence-number gaps."""
        if count:
            with self._lock:
                self.sequence_gaps[eye] += count

    def record_dds_message_lost(self, eye: str, count: int) -> None:
        """What the middleware's message-lost event reported for ``eye``."""
        if count:
            with self._lock:
                self.dds_message_lost[eye] += count

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64)
            recent = sum(1 for t in self._result_times if now - t <= self.rate_window_s)
            span = min(self.rate_window_s, now - self._result_times[0]) if self._result_times else 0.0
            return {
                "rate_hz": recent / span if span > 0 else 0.0,
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
                "results": dict(self.results),
                "drops": dict(self.drops),
                "received": dict(self.received),
                "transport_lost": self._transport_lost(),
                "sequence_gaps": dict(self.sequence_gaps),
                "dds_message_lost": dict(self.dds_message_lost),
                "images_in_results": self.images_in_results,
                "images_dropped": self.images_dropped,
            }

    def _transport_lost(self) -> dict[str, int]:
        """Per eye, the larger of the two partial loss counts (they overlap: never add them)."""
        eyes = set(self.sequence_gaps) | set(self.dds_message_lost)
        return {e: max(self.sequence_gaps.get(e, 0), self.dds_message_lost.get(e, 0)) for e in eyes}

    def problems(self) -> int:
        with self._lock:
            return sum(self.drops.values()) + self.results.get("error", 0) + sum(self._transport_lost().values())


def to_diagnostic_array(
    stats: PipelineStats,
    *,
    node_name: str,
    stamp: Any,
    backend: str,
    engine: str,
    model_id: str,
    queue_depth: int,
    extra: dict[str, Any] | None = None,
) -> Any:
    """One DiagnosticStatus ``<node_name>: pipeline`` with every counter as a KeyValue."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    snap = stats.snapshot()
    problems = stats.problems()
    new_problems = problems - stats._last_reported_problems
    stats._last_reported_problems = problems
    status = DiagnosticStatus()
    status.name = f"{node_name}: pipeline"
    status.hardware_id = engine or backend or "none"
    if not backend:
        status.level, status.message = DiagnosticStatus.ERROR, "no inference backend loaded (node not configured)"
    elif new_problems > 0:
        status.level, status.message = (DiagnosticStatus.WARN,
                                        f"{new_problems} inputs dropped, lost or errors since last report")
    else:
        status.level, status.message = DiagnosticStatus.OK, "running"
    values: dict[str, Any] = {
        "rate_hz": f"{snap['rate_hz']:.3f}",
        "latency_p50_ms": f"{snap['latency_p50_ms']:.1f}",
        "latency_p95_ms": f"{snap['latency_p95_ms']:.1f}",
        "backend": backend,
        "engine": engine,
        "model_id": model_id,
        "queue_depth": queue_depth,
    }
    for eye, n in sorted(snap["received"].items()):
        values[f"received_{eye}"] = n
    for name in STATUS_NAMES.values():
        values[f"results_{name}"] = snap["results"].get(name, 0)
    for reason, n in sorted(snap["drops"].items()):
        values[f"drops_{reason}"] = n
    values["drops_total"] = sum(snap["drops"].values())
    for eye in ("left", "right"):
        values[f"transport_lost_{eye}"] = snap["transport_lost"].get(eye, 0)
    for eye in ("left", "right"):
        values[f"sequence_gaps_{eye}"] = snap["sequence_gaps"].get(eye, 0)
    for eye in ("left", "right"):
        values[f"dds_message_lost_{eye}"] = snap["dds_message_lost"].get(eye, 0)
    values["images_in_results"] = snap["images_in_results"]
    values["images_dropped"] = snap["images_dropped"]
    values.update(extra or {})
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def diagnostic_values(array: Any) -> dict[str, str]:
    """Flatten the first status's KeyValues (tests, demo, soak benchmark)."""
    return {kv.key: kv.value for kv in array.status[0].values} if array.status else {}
