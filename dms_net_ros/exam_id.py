"""The exam id the node copies into every result: where it comes from and what is accepted.

Sources: the ``exam_id`` parameter and the ``exam_id`` topic. The topic is read by two
subscriptions, reliable + transient local (a latched id published before the node started
still arrives) and reliable + volatile (a publisher that does not latch: ``ros2 topic pub``,
or ``ros2 bag play`` of a bag without recorded QoS, which falls back to reliable +
volatile). A transient-local publisher matches both, so every message comes twice and the
two copies may arrive in either order relative to the next message; `ExamIdState` applies
a message only if its publisher's sequence number is newer than the last one applied from
that publisher, which drops the second copy and any overtaken older id (issue 16).

Length: an exam id longer than `MAX_EXAM_ID_LENGTH` characters is refused rather than
truncated: a truncated id could match another exam. Until a valid id arrives, the node
publishes ERROR results naming the problem (so nothing is attributed to a wrong or
ambiguous exam) and logs only the id's length and first characters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: Longest exam id accepted (characters). Hospital accession numbers and UUIDs are < 64.
MAX_EXAM_ID_LENGTH = 256
#: Characters of a refused id shown in logs and results.
SHOWN_PREFIX = 32


def shown(exam_id: str) -> str:
    """The id bounded for a log line or a result field."""
    if len(exam_id) <= MAX_EXAM_ID_LENGTH:
        return exam_id
    return f"{exam_id[:SHOWN_PREFIX]}...({len(exam_id)} chars)"


@dataclass(frozen=True)
class ExamId:
    """What a result carries: the id (bounded) and, when the id was refused, why."""

    value: str
    error: str = ""


class ExamIdState:
    """Thread-safe current exam id with the acceptance rules of the module docstring."""

    def __init__(self, initial: str = "") -> None:
        self._lock = threading.Lock()
        self._current = ExamId("")
        self._last_sequence: dict[bytes, int] = {}
        self.refused_too_long = 0
        self.set(initial)

    @property
    def current(self) -> ExamId:
        with self._lock:
            return self._current

    def set(self, exam_id: str, publisher: bytes | None = None, sequence: int | None = None) -> tuple[bool, str]:
        """Offer an id; returns (changed, one log line or "")."""
        with self._lock:
            if publisher is not None and sequence is not None:
                last = self._last_sequence.get(publisher)
                if last is not None and sequence <= last:
                    return False, ""  # the latched copy of a message already applied, or an overtaken one
                self._last_sequence[publisher] = sequence
                if len(self._last_sequence) > 64:
                    self._last_sequence.pop(next(iter(self._last_sequence)))
            if len(exam_id) > MAX_EXAM_ID_LENGTH:
                self.refused_too_long += 1
                error = (f"exam id of {len(exam_id)} characters refused (longest accepted: {MAX_EXAM_ID_LENGTH}): "
                         "fix the exam id the robot workflow publishes; results are ERROR until a valid id arrives")
                new = ExamId(shown(exam_id), error)
            else:
                new = ExamId(exam_id)
            changed = new != self._current
            self._current = new
        if not changed:
            return False, ""
        return True, new.error or f"exam_id set to {new.value!r}"
