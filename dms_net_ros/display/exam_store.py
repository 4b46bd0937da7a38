"""What the display remembers: recent exams and the eye images that belong to them.

A `DiagnosisResult` carries no pixels, only ``left_stamp`` / ``right_stamp``: the header stamps
of the eye images the node used (its attention overlays carry the same stamps). Images and
results arrive on separate topics in either order, so both sides wait for each other:

* an image (or overlay) is kept in a small bounded buffer per kind until a result names its
  stamp (cameras stream; only the few most recent frames can still belong to a result);
* a result takes the buffered images with its stamps; one that arrives later is attached to
  the exam in history that names its stamp (`ExamStore.add_image` says which exam changed).

Everything is in memory and bounded (``history`` exams, ``buffer`` frames per kind): patient
images are never written to disk here. Encoding (JPEG) is the caller's `encode` callable, run
only for images that match a result, so a 30 Hz camera costs no encoding. No ROS import: the
node converts messages to plain values (`exam_dict`), so this is testable without rclpy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

#: image kinds: the two photographs and the two overlays (`left/attention`, `right/attention`)
KINDS = ("left", "right", "left_attention", "right_attention")


@dataclass
class Exam:
    """One result as the page shows it, with its JPEG images (kind -> bytes)."""

    index: int
    data: dict[str, Any]  # JSON-safe result fields (`exam_dict`)
    stamps: dict[str, int]  # "left"/"right" -> stamp_ns the result names (0: none)
    images: dict[str, bytes] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON the page gets: the result plus its index and which images it has."""
        return {**self.data, "index": self.index, "images": sorted(self.images)}


def _eye_of(kind: str) -> str:
    return kind.split("_", 1)[0]


class ExamStore:
    """Bounded history of exams plus bounded per-kind image buffers; thread-safe."""

    def __init__(self, history: int = 20, buffer: int = 8) -> None:
        if history < 1 or buffer < 1:
            raise ValueError(f"history and buffer must be at least 1, got history={history}, buffer={buffer}")
        self.history = history
        self.buffer = buffer
        self._exams: OrderedDict[int, Exam] = OrderedDict()
        self._pending: dict[str, OrderedDict[int, Any]] = {k: OrderedDict() for k in KINDS}
        self._next = 1
        self._lock = threading.Lock()

    def add_result(self, data: dict[str, Any], left_stamp_ns: int, right_stamp_ns: int,
                   encode: Callable[[Any], bytes | None]) -> Exam:
        """Record a result; buffered images with its stamps become its images (``encode``d)."""
        stamps = {"left": int(left_stamp_ns), "right": int(right_stamp_ns)}
        with self._lock:
            exam = Exam(self._next, dict(data), stamps)
            self._next += 1
            matched = {k: self._pending[k].pop(stamps[_eye_of(k)]) for k in KINDS
                       if stamps[_eye_of(k)] and stamps[_eye_of(k)] in self._pending[k]}
            self._exams[exam.index] = exam
            while len(self._exams) > self.history:
                self._exams.popitem(last=False)
        for kind, item in matched.items():  # encode outside the lock
            jpeg = encode(item)
            if jpeg is not None:
                exam.images[kind] = jpeg
        return exam

    def add_image(self, kind: str, stamp_ns: int, item: Any, encode: Callable[[Any], bytes | None]) -> Exam | None:
        """An image or overlay: attached to the exam naming its stamp (returned), else buffered (None)."""
        if kind not in KINDS:
            raise ValueError(f"unknown image kind {kind!r}: use one of {', '.join(KINDS)}")
        with self._lock:
            owner = next((e for e in reversed(self._exams.values())
                          if stamp_ns and e.stamps[_eye_of(kind)] == stamp_ns and kind not in e.images), None)
            if owner is None:
                pending = self._pending[kind]
                pending[stamp_ns] = item
                pending.move_to_end(stamp_ns)
                while len(pending) > self.buffer:
                    pending.popitem(last=False)
                return None
        jpeg = encode(item)
        if jpeg is None:
            return None
        owner.images[kind] = jpeg
        return owner

    def get(self, index: int) -> Exam | None:
        with self._lock:
            return self._exams.get(index)

    def image(self, index: int, kind: str) -> bytes | None:
        exam = self.get(index)
        return exam.images.get(kind) if exam is not None else None

    def summaries(self) -> list[dict[str, Any]]:
        """Every remembered exam, oldest first."""
        with self._lock:
            exams = list(self._exams.values())
        return [e.summary() for e in exams]
