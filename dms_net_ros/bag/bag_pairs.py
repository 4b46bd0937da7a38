"""The node's pairing over a bag: ``(Pair, exam_id)`` in the order the node would form them.

The pairer is the node's own (`dms_net_ros.pairing.ApproximateTimePairer`, with the node's
settings); its clock is the bag's log time, as the node's is its receive time. Each pair gets
the exam id last published on the exam topic before its second eye (the node's latched-topic
rule). Unpaired images (with the pairer's reason) and messages that do not deserialize are
listed, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from dms_net_ros.bag import io
from dms_net_ros.pairing import ApproximateTimePairer, PairingSettings
from dms_net_ros.stamps import stamp_to_ns


@dataclass(frozen=True)
class BagEye:
    """One eye image as recorded: still CDR bytes until its pair is processed."""

    msgtype: str
    raw: bytes
    log_ns: int

    def message(self) -> Any:
        return io.deserialize(self.raw, self.msgtype)


class BagPairs:
    """Iterate ``(pairing.Pair, exam_id)`` in the order the node would form them.

    Items stay raw CDR bytes (`BagEye`) until paired (a long robot bag does not fit in memory
    decoded). After iteration, ``stats`` is the pairer's `PairingStats` and ``unpaired``
    lists every message that left without a partner, with the pairer's reason.
    """

    def __init__(self, reader: io.BagReader, left: io.TopicMatch, right: io.TopicMatch, exam: io.TopicMatch | None,
                 settings: PairingSettings, *, progress: bool = False):
        self.reader, self.left, self.right, self.exam, self.progress = reader, left, right, exam, progress
        self.pairer = ApproximateTimePairer.from_settings(settings)
        self.unpaired: list[dict[str, Any]] = []

    @property
    def stats(self) -> Any:
        return self.pairer.stats

    def _drop(self, items: list[Any]) -> None:
        for item in items:
            self.unpaired.append({"eye": item.eye, "stamp_ns": item.stamp_ns, "reason": item.reason,
                                  "message": item.describe()})

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        left_ids = {c.id for c in self.left.connections}
        exam_ids = {c.id for c in self.exam.connections} if self.exam is not None else set()
        current_exam = ""
        messages = self.reader.messages([self.left, self.right, self.exam], progress=self.progress,
                                        desc=f"evaluate {self.reader.path.name}")
        for conn, log_ns, raw in messages:
            now = log_ns / 1e9
            if conn.id in exam_ids:
                current_exam = str(io.deserialize(raw, conn.msgtype).data)
                continue
            eye = "left" if conn.id in left_ids else "right"
            try:
                stamp_ns = stamp_to_ns(io.deserialize(raw, conn.msgtype).header.stamp)
            except Exception as err:  # noqa: BLE001 - a message that does not deserialize is an input error
                self.stats.received[eye] += 1
                self.unpaired.append({"eye": eye, "stamp_ns": log_ns, "reason": "undecodable",
                                      "message": f"{eye} message at log time {now:.3f} "
                                                 f"does not deserialize as {conn.msgtype}: {err}"})
                continue
            self._drop(self.pairer.expire(now))
            out = self.pairer.add(eye, stamp_ns, BagEye(conn.msgtype, bytes(raw), log_ns), received=now)
            self._drop(out.unpaired)
            for pair in out.pairs:
                yield pair, current_exam
        # End of bag: the node's timer expires what is left once the timeout has passed.
        self._drop(self.pairer.expire(float("inf")))
