"""Approximate-time pairing of left/right eye images by header stamp (pure Python, no ROS).

`message_filters` is not installable here, and its ApproximateTimeSynchronizer neither
counts what it drops nor says which eye is missing, which a diagnostic device must
report. This module is small and deterministic:

Semantics
---------
* Each eye has a buffer of unpaired messages, sorted by stamp, at most ``queue_size`` long.
* **Matching.** When a message arrives, it pairs *immediately* with the buffered message of
  the other eye whose stamp is nearest to its own, provided ``|dt| <= slop``; ties go to
  the older message. Both leave the buffers and a `Pair` is returned. Immediate matching
  adds no latency; with ``slop`` smaller than half the time between exams (seconds on a
  fundus camera) it is the same as the globally nearest matching.
* **Duplicate.** A message whose stamp equals one already buffered or recently paired for
  the same eye is dropped (``duplicate``): a re-sent frame must not produce a second result.
* **From the future.** When the caller passes its clock (``now_ns``), a message stamped more
  than ``max_ahead`` after it is dropped at once (``future_stamp``) and touches nothing
  else: one wrong camera clock reading costs one result (issue 16: one image stamped an hour
  ahead used to make every later pair "out of order").
* **Out of order.** A message older than or equal to the newest stamp already *paired* for
  its eye, or older than the expiry horizon (below), arrives too late to be paired
  consistently and is dropped (``out_of_order``) and reported, so the caller can publish an
  ERROR result for it. Older-than-newest messages that are still pairable are simply
  inserted in stamp order.
* **Clock jumps back.** When a left and a right message are both dropped as out of order
  within ``timeout`` of each other (receipt clock) and their stamps lie within ``slop`` of
  each other, the cameras agree on a new, earlier time (a clock reset, a looping bag, or the
  watermarks were set by a pair from the future): the watermarks are reset to that time and
  pairing resumes with the next images. This costs one exam, not every exam after.
* **Expiry.** An unpaired message expires (``unpaired_timeout``) when its stamp is older
  than the horizon, the newest stamp seen minus ``timeout``, or, via `expire`, when it
  was *received* more than ``timeout`` ago by the caller's clock (so the last exam of a
  session is reported even if no newer image ever comes). Expired messages are returned as
  `Unpaired` items naming the missing eye ("right eye never arrived"). A pair always
  advances the newest stamp seen; an unpaired message only when it lies at most
  ``max_ahead`` after it, so an outlying stamp cannot expire or reject the images after it.
* **Eviction.** A buffer over ``queue_size`` drops its oldest message (``evicted``), also
  returned as `Unpaired`: memory is bounded by ``2 * queue_size`` messages whatever the
  input.

Every dropped message increments exactly one counter in `PairingStats`, so
``received == 2 * pairs + sum(drops) + buffered`` always holds.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

EYES = ("left", "right")
DROP_REASONS = ("unpaired_timeout", "evicted", "out_of_order", "future_stamp", "duplicate")


@dataclass(frozen=True)
class PairingSettings:
    """The pairer's knobs. Field names are the node's parameter names and the defaults its
    defaults (`dms_net_ros.node_parameters` builds its table from these fields; the bag tools
    pair with the same values)."""

    slop_s: float = field(default=0.5, metadata={
        "description": "max stamp difference (s) between a left and a right image of one exam"})
    pair_timeout_s: float = field(default=5.0, metadata={
        "description": "an eye image without partner for this long (s) gives an ERROR result 'eye never arrived'"})
    max_stamp_ahead_s: float = field(default=10.0, metadata={
        "description": "an image stamped more than this (s) ahead of the node's clock gives an ERROR result "
                       "(camera clock wrong); 0 disables"})
    pairing_queue_size: int = field(default=10, metadata={
        "description": "unpaired images kept per eye (oldest evicted and counted beyond)"})


def other_eye(eye: str) -> str:
    return "right" if eye == "left" else "left"


@dataclass
class _Entry:
    stamp_ns: int
    received: float  # caller's clock (seconds), for `expire`
    item: Any


@dataclass(frozen=True)
class Pair:
    """A matched left/right pair (``item`` as given to `add`)."""

    left_stamp_ns: int
    right_stamp_ns: int
    left: Any
    right: Any
    received: float  # when the second eye arrived (caller's clock)

    @property
    def stamp_ns(self) -> int:
        """The pair's stamp: the later of the two eyes."""
        return max(self.left_stamp_ns, self.right_stamp_ns)


@dataclass(frozen=True)
class Unpaired:
    """A message that left the pairer without a partner, and why."""

    eye: str
    stamp_ns: int
    item: Any
    reason: str  # one of DROP_REASONS
    ahead_s: float = 0.0  # future_stamp: seconds ahead of the caller's clock

    @property
    def missing_eye(self) -> str:
        return other_eye(self.eye)

    def describe(self) -> str:
        """One line for logs and ERROR results."""
        sec = self.stamp_ns / 1e9
        if self.reason == "unpaired_timeout":
            return (f"{self.missing_eye} eye never arrived for the {self.eye} image stamped {sec:.3f}: "
                    f"check the {self.missing_eye} camera topic")
        if self.reason == "out_of_order":
            return (
                f"{self.eye} image stamped {sec:.3f} arrived after newer images were already paired: "
                "check the camera clocks (stamps must increase)"
            )
        if self.reason == "future_stamp":
            return (
                f"{self.eye} image stamped {sec:.3f} is {self.ahead_s:.1f} s ahead of this node's clock: "
                "check the camera clock (NTP/PTP); the image is not diagnosed"
            )
        if self.reason == "evicted":
            return (f"{self.eye} image stamped {sec:.3f} evicted from a full pairing queue: "
                    f"the {self.missing_eye} eye is missing or late")
        return f"{self.eye} image stamped {sec:.3f} is a duplicate stamp: ignored"


@dataclass
class PairingStats:
    received: dict[str, int] = field(default_factory=lambda: {e: 0 for e in EYES})
    pairs: int = 0
    drops: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})


@dataclass(frozen=True)
class PairingOutput:
    pairs: list[Pair]
    unpaired: list[Unpaired]


class ApproximateTimePairer:
    """Pairs left/right messages by stamp; see the module docstring for the exact rules."""

    def __init__(self, slop_s: float = PairingSettings.slop_s, queue_size: int = PairingSettings.pairing_queue_size,
                 timeout_s: float = PairingSettings.pair_timeout_s,
                 max_ahead_s: float = PairingSettings.max_stamp_ahead_s) -> None:
        if slop_s < 0 or queue_size < 1 or timeout_s <= 0 or max_ahead_s < 0:
            raise ValueError(f"pairing needs slop >= 0, queue_size >= 1, timeout > 0, max_ahead >= 0 "
                             f"(got {slop_s}, {queue_size}, {timeout_s}, {max_ahead_s})")
        self.slop_ns = int(round(slop_s * 1e9))
        self.timeout_ns = int(round(timeout_s * 1e9))
        self.timeout_s = float(timeout_s)
        self.max_ahead_ns = int(round(max_ahead_s * 1e9))
        self.queue_size = int(queue_size)
        self._buffers: dict[str, list[_Entry]] = {e: [] for e in EYES}
        self._paired_recent: dict[str, deque[int]] = {e: deque(maxlen=self.queue_size) for e in EYES}
        self._newest_paired: dict[str, int | None] = {e: None for e in EYES}
        self._newest_seen: int | None = None
        self._last_out_of_order: dict[str, _Entry | None] = {e: None for e in EYES}
        self.clock_resets = 0
        self.stats = PairingStats()

    # -- public API -------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: PairingSettings) -> "ApproximateTimePairer":
        return cls(settings.slop_s, settings.pairing_queue_size, settings.pair_timeout_s, settings.max_stamp_ahead_s)

    def add(self, eye: str, stamp_ns: int, item: Any, received: float = 0.0,
            now_ns: int | None = None) -> PairingOutput:
        """Offer one message; returns the pairs made and the messages dropped by this call.

        ``now_ns``: the caller's clock on the cameras' time base (the node's ROS clock), for
        the ``future_stamp`` rule; None skips that rule (offline evaluation).
        """
        if eye not in EYES:
            raise ValueError(f"eye must be 'left' or 'right', got {eye!r}")
        self.stats.received[eye] += 1
        dropped: list[Unpaired] = []
        entry = _Entry(stamp_ns, received, item)
        if now_ns is not None and self.max_ahead_ns and stamp_ns > now_ns + self.max_ahead_ns:
            return PairingOutput([], [self._drop(eye, entry, "future_stamp", ahead_s=(stamp_ns - now_ns) / 1e9)])
        own = self._buffers[eye]
        if stamp_ns in self._paired_recent[eye] or any(e.stamp_ns == stamp_ns for e in own):
            return PairingOutput([], [self._drop(eye, entry, "duplicate")])
        newest_paired = self._newest_paired[eye]
        horizon = None if self._newest_seen is None else self._newest_seen - self.timeout_ns
        if (newest_paired is not None and stamp_ns <= newest_paired) or (horizon is not None and stamp_ns < horizon):
            self._detect_clock_jump_back(eye, entry)
            return PairingOutput([], [self._drop(eye, entry, "out_of_order")])

        if self._newest_seen is None or self._newest_seen < stamp_ns <= self._newest_seen + self.max_ahead_ns:
            self._newest_seen = stamp_ns
        dropped += self._expire_by_stamp()

        match = self._nearest(self._buffers[other_eye(eye)], stamp_ns)
        if match is not None:
            self._buffers[other_eye(eye)].remove(match)
            pair = self._make_pair(eye, entry, match, received)
            if self._newest_seen is None or pair.stamp_ns > self._newest_seen:
                self._newest_seen = pair.stamp_ns  # two cameras agree: time has moved on
                dropped += self._expire_by_stamp()
            return PairingOutput([pair], dropped)

        bisect.insort(own, entry, key=lambda e: e.stamp_ns)
        while len(own) > self.queue_size:
            dropped.append(self._drop(eye, own.pop(0), "evicted"))
        return PairingOutput([], dropped)

    def expire(self, now: float) -> list[Unpaired]:
        """Drop messages received more than ``timeout`` before ``now`` (caller's clock)."""
        out: list[Unpaired] = []
        for eye in EYES:
            keep = []
            for entry in self._buffers[eye]:
                if now - entry.received > self.timeout_s:
                    out.append(self._drop(eye, entry, "unpaired_timeout"))
                else:
                    keep.append(entry)
            self._buffers[eye] = keep
        return out

    def buffered(self) -> dict[str, int]:
        return {e: len(self._buffers[e]) for e in EYES}

    def clear(self) -> list[Unpaired]:
        """Forget everything buffered (e.g. on deactivate); the caller counts the returned items."""
        out = [Unpaired(e, x.stamp_ns, x.item, "unpaired_timeout") for e in EYES for x in self._buffers[e]]
        self._buffers = {e: [] for e in EYES}
        return out

    # -- internals --------------------------------------------------------------------
    def _nearest(self, buf: list[_Entry], stamp_ns: int) -> _Entry | None:
        best: _Entry | None = None
        for e in buf:  # sorted by stamp: the first of equal distances is the older one
            d = abs(e.stamp_ns - stamp_ns)
            if d <= self.slop_ns and (best is None or d < abs(best.stamp_ns - stamp_ns)):
                best = e
        return best

    def _make_pair(self, eye: str, entry: _Entry, match: _Entry, received: float) -> Pair:
        left, right = (entry, match) if eye == "left" else (match, entry)
        for e, x in (("left", left), ("right", right)):
            self._paired_recent[e].append(x.stamp_ns)
            prev = self._newest_paired[e]
            self._newest_paired[e] = x.stamp_ns if prev is None else max(prev, x.stamp_ns)
        self.stats.pairs += 1
        return Pair(left.stamp_ns, right.stamp_ns, left.item, right.item, received)

    def _expire_by_stamp(self) -> list[Unpaired]:
        assert self._newest_seen is not None
        horizon = self._newest_seen - self.timeout_ns
        out: list[Unpaired] = []
        for eye in EYES:
            buf = self._buffers[eye]
            while buf and buf[0].stamp_ns < horizon:
                out.append(self._drop(eye, buf.pop(0), "unpaired_timeout"))
        return out

    def _detect_clock_jump_back(self, eye: str, entry: _Entry) -> None:
        """Reset the watermarks when both eyes were just refused with matching stamps."""
        self._last_out_of_order[eye] = entry
        other = self._last_out_of_order[other_eye(eye)]
        if (other is None or abs(entry.received - other.received) > self.timeout_s
                or abs(entry.stamp_ns - other.stamp_ns) > self.slop_ns):
            return
        restart = min(entry.stamp_ns, other.stamp_ns)
        self._newest_paired = {e: restart for e in EYES}
        self._newest_seen = restart
        self._paired_recent = {e: deque(maxlen=self.queue_size) for e in EYES}
        self._last_out_of_order = {e: None for e in EYES}
        self.clock_resets += 1

    def _drop(self, eye: str, entry: _Entry, reason: str, ahead_s: float = 0.0) -> Unpaired:
        self.stats.drops[reason] += 1
        return Unpaired(eye, entry.stamp_ns, entry.item, reason, ahead_s)
