"""Count images a publisher sent that never reached the node (pure Python, no ROS).

Fast DDS's message-lost event (rclpy ``SubscriptionEventCallbacks(message_lost=...)``) is
counted too, but on these Kilted wheels it reports only part of what is lost: measured
here, an unpaced burst of 200 best-effort 256x256 images to a subscriber keeping the last 5
delivered 6 and reported 0 or 29 lost in two runs; reliable KEEP_LAST publishers overwrite
unacknowledged samples without any event. What every middleware hands over is each
message's publisher and publication sequence number (``MessageInfo``): a writer numbers its
samples 1, 2, 3, ..., so a jump from 5 to 9 means three images that were published and
never delivered, whatever dropped them (a full shared-memory segment, UDP fragments, a
history that overflowed, a reader that fell behind).

`SequenceGapCounter` keeps the last sequence number per publisher and counts the jumps.
Before a publisher's first delivered message nothing tells "lost" from "published before
this subscription existed"; images of a publisher that appeared after the subscription was
created (``known`` did not hold its gid) count from sequence number 1. Losses after the last
delivered message are counted when the next message arrives. The counter is bounded: it
forgets the least recently heard publisher beyond ``max_publishers``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable


class SequenceGapCounter:
    """Messages lost per subscription, from publishers' sequence numbers."""

    def __init__(self, known_publishers: Iterable[bytes] = (), max_publishers: int = 64) -> None:
        self._lock = threading.Lock()
        self._known = set(known_publishers)
        self._last: OrderedDict[bytes, int] = OrderedDict()
        self._max = int(max_publishers)
        self.lost = 0
        self.unnumbered = 0  # messages without a sequence number (an RMW that does not give one)

    def observe(self, publisher: bytes | None, sequence: int | None) -> int:
        """Record one delivered message; returns how many of this publisher's were skipped."""
        with self._lock:
            if publisher is None or sequence is None:
                self.unnumbered += 1
                return 0
            last = self._last.pop(publisher, None)
            if last is None:
                # A publisher born after we subscribed numbers from 1: anything before this one was ours and lost.
                missed = 0 if publisher in self._known else max(0, sequence - 1)
            else:
                missed = max(0, sequence - last - 1)
                sequence = max(sequence, last)  # a duplicate or a reordered sample: keep the newest
            self._last[publisher] = sequence
            while len(self._last) > self._max:
                self._last.popitem(last=False)
            self.lost += missed
            return missed


#: Largest message-lost change taken at its word. Fast DDS on these wheels reports 2147483647
#: (INT32_MAX) for a fragmented 50 MB best-effort sample, arrived or not (issue 25, measured:
#: 3 of 5 such frames); the sequence-number gap counts those losses exactly.
MAX_PLAUSIBLE_LOST_CHANGE = 1_000_000


def plausible_lost_change(change: int) -> int:
    """A message-lost event's ``total_count_change``, or 0 when it cannot be a count of lost images."""
    change = int(change)
    return change if 0 < change <= MAX_PLAUSIBLE_LOST_CHANGE else 0


def publisher_key(message_info: dict | None) -> tuple[bytes | None, int | None]:
    """(publisher gid bytes, publication sequence number) from rclpy's ``MessageInfo`` dict."""
    if not message_info:
        return None, None
    gid = message_info.get("publisher_gid")
    data = gid.get("data") if isinstance(gid, dict) else None
    return (gid_bytes(data) if data is not None else None), message_info.get("publication_sequence_number")


def gid_bytes(gid: bytes | list[int]) -> bytes:
    """A publisher gid (MessageInfo bytes or TopicEndpointInfo int list) as comparable bytes."""
    return bytes(gid)[:16]
