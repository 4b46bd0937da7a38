"""DiagnosisResult and /diagnostics messages -> JSON-safe dicts for the page.

JSON has no NaN (``left_quality`` is NaN when not assessed) and JavaScript numbers lose
nanoseconds past 2^53, so NaN becomes null and stamps travel as decimal strings beside an ISO
time. Duck-typed on the message attributes: no rclpy needed to test it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from dms_net_core.json_safe import finite_or_none
from dms_net_ros.stamps import stamp_to_ns

STATUS_NAMES = {0: "OK", 1: "UNGRADABLE", 2: "ERROR"}
LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def iso_time(ns: int) -> str:
    """UTC, second resolution; "" for a zero stamp."""
    if not ns:
        return ""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any) -> float | None:
    v = finite_or_none(value)
    return None if v is None else round(v, 4)


def _nums(values: Any) -> list[float | None]:
    return [_num(v) for v in values]


def result_dict(msg: Any) -> dict[str, Any]:
    """Every field of a DiagnosisResult the page shows."""
    stamp = stamp_to_ns(msg.header.stamp)
    status = int(msg.status)
    return {
        "exam_id": str(msg.exam_id),
        "stamp_ns": str(stamp),
        "time": iso_time(stamp),
        "left_stamp_ns": str(stamp_to_ns(msg.left_stamp)),
        "right_stamp_ns": str(stamp_to_ns(msg.right_stamp)),
        "status": status,
        "status_name": STATUS_NAMES.get(status, str(status)),
        "status_message": str(msg.status_message),
        "class_codes": [str(c) for c in msg.class_codes],
        "class_names": [str(c) for c in msg.class_names],
        "probabilities": _nums(msg.probabilities),
        "thresholds": _nums(msg.thresholds),
        "positives": [bool(p) for p in msg.positives],
        "positive_codes": [str(c) for c in msg.positive_codes],
        "positive_eyes": [str(e) for e in msg.positive_eyes],
        "referable": bool(msg.referable),
        "summary": str(msg.summary),
        "left_probabilities": _nums(msg.left_probabilities),
        "right_probabilities": _nums(msg.right_probabilities),
        "left_quality": _num(msg.left_quality),
        "right_quality": _num(msg.right_quality),
        "left_gradable": bool(msg.left_gradable),
        "right_gradable": bool(msg.right_gradable),
        "quality_reasons": [str(r) for r in msg.quality_reasons],
        "model_id": str(msg.model_id),
        "backend": str(msg.backend),
        "backend_detail": str(msg.backend_detail),
        "attention_published": bool(msg.attention_published),
        "left_attention_code": str(msg.left_attention_code),
        "right_attention_code": str(msg.right_attention_code),
        "preprocess_ms": _num(msg.preprocess_ms),
        "inference_ms": _num(msg.inference_ms),
        "total_ms": _num(msg.total_ms),
    }


def _level(value: Any) -> int:
    return int.from_bytes(value, "little") if isinstance(value, (bytes, bytearray)) else int(value)


def diagnostic_dicts(msg: Any, prefix: str) -> list[dict[str, Any]]:
    """The statuses of a DiagnosticArray whose name starts with ``prefix`` (the diagnosis
    node's namespace, e.g. ``/demo/``): level, message and every key value."""
    out = []
    for status in msg.status:
        if prefix and not str(status.name).startswith(prefix):
            continue
        level = _level(status.level)
        out.append({
            "name": str(status.name),
            "level": level,
            "level_name": LEVEL_NAMES.get(level, str(level)),
            "message": str(status.message),
            "hardware_id": str(status.hardware_id),
            "values": {str(kv.key): str(kv.value) for kv in status.values},
            "time": iso_time(stamp_to_ns(msg.header.stamp)),
        })
    return out
