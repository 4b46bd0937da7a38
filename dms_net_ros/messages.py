"""Build `dms_net_ros/msg/DiagnosisResult` messages (pure functions, no node state).

One builder per status (OK / UNGRADABLE / ERROR) so every result a clinician display can
receive is filled the same way: provenance (exam id, stamps, model id, backend) always,
per-class arrays only for OK, quality fields whenever the images were assessed. Class
codes and names come from the model bundle, never from a constant here. `exam_result_msg`
turns the exam pipeline's `ExamResult` into the message of its status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from dms_net_core.exam_pipeline import ExamResult, ExamStatus, quality_reasons, ungradable_message
from dms_net_core.postprocess import Decision, finding_eyes


@dataclass
class ResultContext:
    """What every result of one pair carries, whatever its status."""

    exam_id: str = ""
    left_stamp_ns: int = 0
    right_stamp_ns: int = 0
    frame_id: str = ""
    model_id: str = ""
    backend: str = ""
    backend_detail: str = ""
    left_quality: Any = None  # QualityReport (dms_net_core.data.quality) or None
    right_quality: Any = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # preprocess / inference / total


def time_from_ns(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def summarize(decision: Decision, class_codes: Sequence[str], eyes: Sequence[str] | None = None) -> str:
    """One display line, e.g. ``REFER: C 0.91 (left eye), D 0.62 (both eyes)`` or
    ``no referable finding (N 0.88)``; ``eyes`` (`finding_eyes`, parallel to the positive
    codes) adds the side when the model has per-eye heads."""
    probs = decision.probabilities
    side = dict(zip([c for c, p in zip(class_codes, decision.positive) if p], eyes or []))
    pos = [(c, float(p)) for c, p, is_pos in zip(class_codes, probs, decision.positive) if is_pos and c != "N"]
    if decision.referable:
        if pos:
            return "REFER: " + ", ".join(f"{c} {p:.2f}{_eye_text(side.get(c, ''))}"
                                         for c, p in sorted(pos, key=lambda x: -x[1]))
        return (f"REFER: not confidently normal (N {float(probs[0]):.2f} "
                f"<= threshold {float(decision.thresholds[0]):.2f})")
    return f"no referable finding (N {float(probs[0]):.2f})"


def _eye_text(eye: str) -> str:
    return {"left": " (left eye)", "right": " (right eye)", "both": " (both eyes)"}.get(eye, "")


def _base(ctx: ResultContext, status: int, status_message: str) -> Any:
    from dms_net_ros.msg import DiagnosisResult

    msg = DiagnosisResult()
    msg.header.stamp = time_from_ns(max(ctx.left_stamp_ns, ctx.right_stamp_ns))
    msg.header.frame_id = ctx.frame_id
    msg.exam_id = ctx.exam_id
    msg.left_stamp = time_from_ns(ctx.left_stamp_ns)
    msg.right_stamp = time_from_ns(ctx.right_stamp_ns)
    msg.status = status
    msg.status_message = status_message
    msg.model_id = ctx.model_id
    msg.backend = ctx.backend
    msg.backend_detail = ctx.backend_detail
    msg.left_quality = _score(ctx.left_quality)
    msg.right_quality = _score(ctx.right_quality)
    msg.left_gradable = bool(ctx.left_quality is not None and ctx.left_quality.gradable)
    msg.right_gradable = bool(ctx.right_quality is not None and ctx.right_quality.gradable)
    msg.quality_reasons = quality_reasons(ctx.left_quality, ctx.right_quality)
    msg.preprocess_ms = float(ctx.timings_ms.get("preprocess", 0.0))
    msg.inference_ms = float(ctx.timings_ms.get("inference", 0.0))
    msg.total_ms = float(ctx.timings_ms.get("total", 0.0))
    return msg


def _score(report: Any) -> float:
    return math.nan if report is None else float(report.score)


def ok_result(
    ctx: ResultContext,
    decision: Decision,
    class_codes: Sequence[str],
    class_names: Sequence[str],
    *,
    attention_published: bool = False,
    left_probabilities: np.ndarray | None = None,
    right_probabilities: np.ndarray | None = None,
    attention_codes: Sequence[str] = ("", ""),
) -> Any:
    """STATUS_OK: the network ran; per-class arrays filled from ``decision``, per-eye arrays
    from the per-eye heads' probabilities when the model has them. ``attention_codes`` (left,
    right) name the class each published overlay explains ("" for OSIM attention or none)."""
    from dms_net_ros.msg import DiagnosisResult

    msg = _base(ctx, DiagnosisResult.STATUS_OK, "ok")
    eyes = finding_eyes(decision, left_probabilities, right_probabilities)
    if left_probabilities is not None and right_probabilities is not None:
        msg.left_probabilities = np.asarray(left_probabilities, dtype=np.float32).reshape(-1).tolist()
        msg.right_probabilities = np.asarray(right_probabilities, dtype=np.float32).reshape(-1).tolist()
    msg.positive_eyes = list(eyes)
    msg.class_codes = list(class_codes)
    msg.class_names = list(class_names)
    msg.probabilities = np.asarray(decision.probabilities, dtype=np.float32).tolist()
    msg.thresholds = np.asarray(decision.thresholds, dtype=np.float32).tolist()
    msg.positives = [bool(p) for p in decision.positive]
    msg.positive_codes = [c for c, p in zip(class_codes, decision.positive) if p]
    msg.referable = bool(decision.referable)
    msg.summary = summarize(decision, class_codes, eyes)
    msg.attention_published = bool(attention_published)
    msg.left_attention_code, msg.right_attention_code = (str(c) for c in attention_codes)
    return msg


def ungradable_result(ctx: ResultContext) -> Any:
    """STATUS_UNGRADABLE: an eye failed the quality gate; the exam must be retaken."""
    from dms_net_ros.msg import DiagnosisResult

    bad = [eye for eye, rep in (("left", ctx.left_quality), ("right", ctx.right_quality))
           if rep is not None and not rep.gradable]
    msg = _base(ctx, DiagnosisResult.STATUS_UNGRADABLE, ungradable_message(ctx.left_quality, ctx.right_quality))
    msg.summary = "UNGRADABLE: retake " + " and ".join(bad) + " eye" if bad else "UNGRADABLE: retake the photographs"
    return msg


def error_result(ctx: ResultContext, message: str) -> Any:
    """STATUS_ERROR: bad or missing input, or a failed inference; ``message`` names the fix."""
    from dms_net_ros.msg import DiagnosisResult

    msg = _base(ctx, DiagnosisResult.STATUS_ERROR, message)
    msg.summary = "ERROR: " + message
    return msg


def evidence_codes(result: ExamResult, class_codes: Sequence[str]) -> tuple[str, str]:
    """(left, right) class codes of the result's evidence maps; "" for an eye without one."""
    return tuple(class_codes[ev.class_index] if ev is not None else ""  # type: ignore[return-value]
                 for ev in (result.evidence_left, result.evidence_right))


def exam_result_msg(ctx: ResultContext, result: ExamResult, class_codes: Sequence[str], class_names: Sequence[str], *,
                    attention_published: bool = False) -> Any:
    """The ``DiagnosisResult`` of one `ExamResult` of the exam pipeline, with ``ctx``'s
    provenance and timings. The eyes' quality reports go in unless an eye could not be
    decoded (an ERROR about the input, not about image quality). Published overlays drawn from
    class activation maps name their class (`ExamResult.evidence_left/right`)."""
    if not (result.left.error or result.right.error):
        ctx = replace(ctx, left_quality=result.left_quality, right_quality=result.right_quality)
    if result.status is ExamStatus.OK:
        return ok_result(ctx, result.decision, class_codes, class_names, attention_published=attention_published,
                         left_probabilities=result.left_probabilities, right_probabilities=result.right_probabilities,
                         attention_codes=evidence_codes(result, class_codes) if attention_published else ("", ""))
    if result.status is ExamStatus.UNGRADABLE:
        return ungradable_result(ctx)
    return error_result(ctx, result.message)
