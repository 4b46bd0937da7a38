"""Live (recorded DiagnosisResults) versus offline (`evaluate`) comparison, without ROS.

`replay` records what the node published into a bag; this module turns those results
back into `PairResult`s (decoded with rosbags from the ``.msg`` text, so it runs without
the colcon-built message package) and matches them to the offline pairs by the two eye
stamps, which both sides carry. A pair the node did not report is "explained" when the
node published an ERROR result naming one of its stamps, or when the node's own drop
counters (last ``/diagnostics``) exceed the drops the offline pairing also made; anything
else is "unexplained", which is what QA must investigate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_ros.bag import io
from dms_net_ros.bag.pair_results import STATUS_ERROR, STATUS_OK, STATUS_UNGRADABLE, PairResult
from dms_net_ros.stamps import stamp_to_ns

STATUS_BY_CODE = {0: STATUS_OK, 1: STATUS_UNGRADABLE, 2: STATUS_ERROR}
DIAGNOSTICS_TOPIC = "/diagnostics"


def result_to_pair(msg: Any) -> PairResult:
    """A deserialized DiagnosisResult -> `PairResult` (probabilities only for OK)."""
    status = STATUS_BY_CODE.get(int(msg.status), STATUS_ERROR)
    def array(values: Any) -> np.ndarray | None:
        return np.asarray(values, dtype=np.float32) if len(values) else None

    return PairResult(exam_id=str(msg.exam_id), left_stamp_ns=stamp_to_ns(msg.left_stamp),
                      right_stamp_ns=stamp_to_ns(msg.right_stamp), status=status, message=str(msg.status_message),
                      probabilities=array(msg.probabilities), left_quality=float(msg.left_quality),
                      right_quality=float(msg.right_quality),
                      left_probabilities=array(getattr(msg, "left_probabilities", [])),
                      right_probabilities=array(getattr(msg, "right_probabilities", [])))


@dataclass
class LiveRecording:
    """What a replay recorded: results in arrival order and the last diagnostics values."""

    results: list[PairResult]
    diagnostics: dict[str, str] = field(default_factory=dict)
    result_topic: str = ""


def read_live_recording(bag: Path, result_topic: str = "diagnosis", node_name: str = "") -> LiveRecording:
    """Read a replay output bag: DiagnosisResults on ``result_topic`` and the node's last
    ``/diagnostics`` status (the one named ``<node>: pipeline``, or the last with drop keys)."""
    with io.BagReader(bag) as reader:
        results_match = reader.find_topic(result_topic, (io.DIAGNOSIS_RESULT_TYPE,), flag="--result-topic")
        diag_match = reader.find_topic(DIAGNOSTICS_TOPIC, (io.DIAGNOSTIC_ARRAY_TYPE,), required=False)
        results: list[PairResult] = []
        diagnostics: dict[str, str] = {}
        for conn, _, raw in reader.messages([results_match, diag_match]):
            msg = io.deserialize(raw, conn.msgtype)
            if conn.msgtype == io.DIAGNOSIS_RESULT_TYPE:
                results.append(result_to_pair(msg))
                continue
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if (node_name and status.name.startswith(node_name)) or (not node_name and "drops_total" in values):
                    diagnostics = values
    return LiveRecording(results=results, diagnostics=diagnostics, result_topic=results_match.topic)


@dataclass
class Comparison:
    offline_pairs: int
    live_results: int
    live_by_status: dict[str, int]
    matched: int  # offline pairs the node reported with probabilities (OK)
    max_abs_prob_diff: float  # over matched pairs (nan when none)
    status_mismatches: int  # matched by stamps but OK vs UNGRADABLE differ
    missing: int  # offline pairs with no OK/UNGRADABLE live result
    explained_by_error_results: int
    node_drops: dict[str, int]
    node_extra_drops: int  # node drops beyond the offline pairing's own drops
    unexplained: int
    live_only: int  # live OK/UNGRADABLE results with no offline pair
    exam_id_mismatches: int
    missing_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def format(self) -> str:
        diff = "n/a" if np.isnan(self.max_abs_prob_diff) else f"{self.max_abs_prob_diff:.3g}"
        return (f"live vs offline: offline pairs {self.offline_pairs}, "
                f"live results {self.live_results} {self.live_by_status}; "
                f"matched {self.matched}, max |prob diff| {diff}; missing {self.missing} "
                f"(ERROR results {self.explained_by_error_results}, node drops {self.node_extra_drops} beyond offline "
                f"{self.node_drops}, unexplained {self.unexplained}); live only {self.live_only}; "
                f"status mismatches {self.status_mismatches}; exam id mismatches {self.exam_id_mismatches}")


def _drop_counts(values: dict[str, str]) -> dict[str, int]:
    out = {}
    for key, value in values.items():
        if key.startswith("drops_") and key != "drops_total":
            try:
                out[key[len("drops_"):]] = int(float(value))
            except ValueError:
                continue
    return out


def _compared_outputs(live: PairResult, offline: PairResult) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient probabilities, and each eye's when both sides have them (per-eye models)."""
    pairs = [(live.probabilities, offline.probabilities)]
    for side in ("left_probabilities", "right_probabilities"):
        a, b = getattr(live, side), getattr(offline, side)
        if (a is None) != (b is None):
            return pairs + [(np.ones(1, np.float32), np.zeros(1, np.float32))]  # one side lacks them: a full mismatch
        if a is not None:
            pairs.append((a, b))
    return pairs


def compare(offline: list[PairResult], live: LiveRecording, offline_unpaired: int = 0) -> Comparison:
    """Match live results to offline pairs by ``(left_stamp_ns, right_stamp_ns)``."""
    answered = {}
    errors_by_stamp: set[int] = set()
    by_status = {s: 0 for s in (STATUS_OK, STATUS_UNGRADABLE, STATUS_ERROR)}
    for res in live.results:
        by_status[res.status] = by_status.get(res.status, 0) + 1
        if res.status == STATUS_ERROR:
            errors_by_stamp.update(s for s in (res.left_stamp_ns, res.right_stamp_ns) if s)
        else:
            answered[(res.left_stamp_ns, res.right_stamp_ns)] = res
    diffs, missing, missing_examples = [], [], []
    matched = status_mismatches = exam_mismatches = 0
    offline_keys = set()
    for off in offline:
        key = (off.left_stamp_ns, off.right_stamp_ns)
        offline_keys.add(key)
        if off.status == STATUS_ERROR:
            continue  # offline could not decode it either: the node reports ERROR, not a diagnosis
        live_res = answered.get(key)
        if live_res is None:
            missing.append(off)
            continue
        if live_res.exam_id != off.exam_id:
            exam_mismatches += 1
        if live_res.status != off.status:
            status_mismatches += 1
            continue
        if live_res.probabilities is not None and off.probabilities is not None:
            matched += 1
            diffs.append(max(float(np.max(np.abs(a - b))) for a, b in _compared_outputs(live_res, off)))
    explained_err = sum(1 for m in missing if m.left_stamp_ns in errors_by_stamp or m.right_stamp_ns in errors_by_stamp)
    drops = _drop_counts(live.diagnostics)
    extra = max(0, sum(drops.values()) - int(offline_unpaired))
    remaining = len(missing) - explained_err
    unexplained = max(0, remaining - extra)
    for m in missing[:10]:
        missing_examples.append(f"{m.exam_id or '?'} left {m.left_stamp_ns} right {m.right_stamp_ns}")
    live_only = sum(1 for k in answered if k not in offline_keys)
    return Comparison(offline_pairs=len(offline), live_results=len(live.results), live_by_status=by_status,
                      matched=matched, max_abs_prob_diff=max(diffs) if diffs else float("nan"),
                      status_mismatches=status_mismatches, missing=len(missing),
                      explained_by_error_results=explained_err,
                      node_drops=drops, node_extra_drops=extra, unexplained=unexplained, live_only=live_only,
                      exam_id_mismatches=exam_mismatches, missing_examples=missing_examples)
