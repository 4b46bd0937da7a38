"""One exam, without ROS: decoded eyes -> quality grade -> prepared eyes -> backend -> decision.

The diagnosis node (`dms_net_ros.node`), ``dms-net-bag evaluate`` and ``dms-net-eval`` all run
a pair of eyes through `ExamPipeline`, so a change to one step (the gate's rule, the
preprocessing, the decision) is a change to this sequence or to the step's own module, never
to three copies held together by tests::

    eye photograph, RGB uint8 (decoded by the caller: messages and files stay outside)
      -> EyeFrame: field of view on a thumbnail, one downscale of its crop    (data.preprocess)
      -> quality grade of the FOV view, plus the quality_min_score floor     (data.quality)
      -> prepared uint8 eye cut from the same downscale (+ illumination)     (data.preprocess)
    both eyes -> verdict: ERROR (an eye was not decoded) | UNGRADABLE | infer
      -> backend.infer on a batch of pairs (the backend normalises)          (runtime)
      -> per-class thresholds, referable flag                                (postprocess)
      -> ExamResult: status, message, qualities, probabilities (patient and per eye),
         decision, attention maps, class activation maps and each eye's evidence map
         (`dms_net_core.evidence`), the prepared eyes, timings

`prepare_eye` works on one eye and is thread-safe, so the node runs both eyes of a pair at
once; `verdict` and `infer` take pairs; `examine_all` batches a stream of pairs for the
offline tools. The node turns an `ExamResult` into a ``DiagnosisResult``
(`dms_net_ros.messages.exam_result_msg`), the bag evaluator and ``dms-net-eval`` into report
rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from dms_net_core.data.preprocess import EyeFrame, PreprocessConfig, prepare_network_eye
from dms_net_core.data.quality import QualityReport, QualityThresholds, assess_eye
from dms_net_core.errors import first_line
from dms_net_core.evidence import EvidenceMap, evidence_maps
from dms_net_core.postprocess import Decision, decide
from dms_net_core.runtime.base import InferenceBackend
from dms_net_core.runtime.inputs import float_pair

Tag = TypeVar("Tag")


class ExamStatus(str, Enum):
    """What became of an exam (the values are the offline reports' status column)."""

    OK = "ok"  # the network ran: probabilities and a decision
    UNGRADABLE = "ungradable"  # an eye failed the quality gate: retake the photograph
    ERROR = "error"  # an eye could not be read, or inference failed


@dataclass(frozen=True)
class ExamSettings:
    """The pipeline's knobs. Field names are the node's parameter names and the defaults are
    its defaults: `dms_net_ros.node_parameters` builds its table from these fields."""

    quality_gate: bool = field(default=True, metadata={
        "description": "run the image-quality gate; an ungradable eye gives an UNGRADABLE result"})
    quality_min_score: float = field(default=0.0, metadata={
        "description": "additionally treat an eye as ungradable when its quality score is below this (0..1)"})


@dataclass(frozen=True)
class EyeError:
    """An eye the caller could not decode; ``message`` is one line naming cause and fix."""

    message: str


#: what a caller hands over per eye: the decoded photograph, or why there is none
Eye = np.ndarray | EyeError


@dataclass
class PreparedEye:
    """One eye after grading and preparation."""

    #: the gate's report (None: the gate is off, or the eye was not decoded)
    quality: QualityReport | None = None
    #: prepared uint8 [S,S,3]: what the backend normalises and attention overlays are drawn on;
    #: None when not decoded, or ungradable in a pipeline that does not infer ungradable pairs
    image: np.ndarray | None = None
    #: why the eye was not decoded (the caller's `EyeError`)
    error: str | None = None
    prepare_ms: float = 0.0

    @property
    def gradable(self) -> bool:
        return self.quality is None or self.quality.gradable


@dataclass
class ExamResult:
    """Everything one pair of eyes became; the node, the bag rows and the evaluator read it."""

    status: ExamStatus
    message: str
    left: PreparedEye
    right: PreparedEye
    probabilities: np.ndarray | None = None  # [C] float32 (also for UNGRADABLE when the pipeline infers those)
    left_probabilities: np.ndarray | None = None  # [C] per-eye heads (models that have them)
    right_probabilities: np.ndarray | None = None
    decision: Decision | None = None  # thresholds applied (when the pipeline has thresholds)
    attention_left: np.ndarray | None = None  # [h,w] OSIM attention in [0,1], when the backend returns it
    attention_right: np.ndarray | None = None
    #: [C,h,w] class activation maps of the per-eye head, when the bundle has them (`ModelBundle.has_cams`)
    cam_left: np.ndarray | None = None
    cam_right: np.ndarray | None = None
    #: the map each eye's overlay shows (its strongest positive finding, else its top class), from the CAMs
    evidence_left: EvidenceMap | None = None
    evidence_right: EvidenceMap | None = None
    #: "preprocess" (the slower eye's grading and preparation), "inference" (per pair of its batch)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def left_quality(self) -> QualityReport | None:
        return self.left.quality

    @property
    def right_quality(self) -> QualityReport | None:
        return self.right.quality


def quality_reasons(left: QualityReport | None, right: QualityReport | None) -> list[str]:
    """Every gate reason of both eyes, each prefixed with its eye."""
    return [f"{eye}: {r}" for eye, rep in (("left", left), ("right", right)) if rep is not None for r in rep.reasons]


def ungradable_message(left: QualityReport | None, right: QualityReport | None) -> str:
    """The one-line status of an UNGRADABLE exam: which eye, why, and the fix."""
    bad = [eye for eye, rep in (("left", left), ("right", right)) if rep is not None and not rep.gradable]
    reasons = quality_reasons(left, right)
    return (f"{' and '.join(bad) or 'an'} eye image ungradable "
            f"({'; '.join(reasons) or 'quality below the minimum score'}): retake the photograph")


class ExamPipeline:
    """The per-pair sequence of the module docstring, bound to one backend and model."""

    def __init__(self, backend: InferenceBackend, preprocess: PreprocessConfig, thresholds: np.ndarray | None = None,
                 settings: ExamSettings = ExamSettings(), *, infer_ungradable: bool = False,
                 quality_thresholds: QualityThresholds = QualityThresholds()) -> None:
        """``thresholds`` (per class) give each result a `Decision`; ``infer_ungradable`` runs the
        network on pairs the gate withheld too (offline QA: the report shows what was withheld;
        the node never publishes probabilities for them)."""
        self.backend = backend
        self.preprocess = preprocess
        self.thresholds = None if thresholds is None else np.asarray(thresholds, np.float32)
        self.settings = settings
        self.infer_ungradable = bool(infer_ungradable)
        self.quality_thresholds = quality_thresholds

    @classmethod
    def for_bundle(cls, bundle: Any, backend: InferenceBackend, settings: ExamSettings = ExamSettings(),
                   **options: Any) -> "ExamPipeline":
        """The pipeline of a `ModelBundle`: its preprocessing and its tuned thresholds."""
        return cls(backend, bundle.preprocess, bundle.thresholds, settings, **options)

    # -- one eye ----------------------------------------------------------------------------
    def prepare_eye(self, eye: Eye) -> PreparedEye:
        """Grade and prepare one decoded eye (thread-safe; an `EyeError` passes through)."""
        if isinstance(eye, EyeError):
            return PreparedEye(error=eye.message)
        t0 = time.perf_counter()
        frame = EyeFrame(eye, self.quality_thresholds.fov_threshold)
        out = PreparedEye()
        if self.settings.quality_gate:
            out.quality = self._grade(frame)
        if out.gradable or self.infer_ungradable:
            out.image = prepare_network_eye(frame, self.preprocess)
        out.prepare_ms = (time.perf_counter() - t0) * 1e3
        return out

    def _grade(self, frame: EyeFrame) -> QualityReport:
        report = assess_eye(frame, self.quality_thresholds)
        floor = self.settings.quality_min_score
        if report.gradable and report.score < floor:
            report.gradable = False
            report.reasons.append(f"quality score {report.score:.2f} below quality_min_score {floor:.2f}")
        return report

    # -- one pair ---------------------------------------------------------------------------
    def verdict(self, left: PreparedEye, right: PreparedEye) -> ExamResult | None:
        """The result a pair gets before inference (ERROR: an eye not decoded; UNGRADABLE),
        or None when the pair goes to the network."""
        timings = {"preprocess": max(left.prepare_ms, right.prepare_ms)}
        errors = [f"{side} eye: {eye.error}" for side, eye in (("left", left), ("right", right)) if eye.error]
        if errors:
            return ExamResult(ExamStatus.ERROR, "; ".join(errors), left, right, timings_ms=timings)
        if not (left.gradable and right.gradable):
            return ExamResult(ExamStatus.UNGRADABLE, ungradable_message(left.quality, right.quality), left, right,
                              timings_ms=timings)
        return None

    def infer(self, pairs: Sequence[tuple[PreparedEye, PreparedEye]],
              verdicts: Sequence[ExamResult | None] | None = None) -> list[ExamResult]:
        """Run the network on a batch of prepared pairs: OK results, or, for a pair whose
        ``verdicts`` entry is UNGRADABLE, that result with the network's outputs added. A
        failing backend gives every pair of the batch an ERROR result (one line: cause, fix)."""
        verdicts = list(verdicts) if verdicts is not None else [None] * len(pairs)
        if not pairs:
            return []
        left = np.stack([pair[0].image for pair in pairs])
        right = np.stack([pair[1].image for pair in pairs])
        if "uint8" not in self.backend.input_forms:  # e.g. a float32-only TensorRT engine or an eager checkpoint
            left, right = float_pair(left, right, self.preprocess)
        t0 = time.perf_counter()
        try:
            out = self.backend.infer(left, right)
        except Exception as exc:  # noqa: BLE001 - one failed batch must not stop a node or a report
            detail = first_line(str(exc))
            text = f"inference failed ({type(exc).__name__}: {detail}): check the bundle and backend"
            return [ExamResult(ExamStatus.ERROR, text, l, r, timings_ms=self._timings(l, r))
                    for (l, r) in pairs]
        per_pair_ms = float(out.timings_ms.get("inference", (time.perf_counter() - t0) * 1e3)) / len(pairs)
        probs = np.asarray(out.probabilities, np.float32)
        results = []
        for k, ((l, r), verdict) in enumerate(zip(pairs, verdicts)):
            res = verdict if verdict is not None else ExamResult(ExamStatus.OK, "ok", l, r)
            res.probabilities = probs[k]
            if out.left_probabilities is not None and out.right_probabilities is not None:
                res.left_probabilities = np.asarray(out.left_probabilities[k], np.float32)
                res.right_probabilities = np.asarray(out.right_probabilities[k], np.float32)
            if out.attention_left is not None and out.attention_right is not None:
                res.attention_left, res.attention_right = out.attention_left[k, 0], out.attention_right[k, 0]
            if self.thresholds is not None:
                res.decision = decide(res.probabilities, self.thresholds)
            if out.cam_left is not None and out.cam_right is not None and res.left_probabilities is not None:
                res.cam_left, res.cam_right = out.cam_left[k], out.cam_right[k]
                res.evidence_left, res.evidence_right = evidence_maps(
                    res.cam_left, res.cam_right, res.left_probabilities, res.right_probabilities, res.decision)
            res.timings_ms = self._timings(l, r) | {"inference": per_pair_ms}
            results.append(res)
        return results

    def examine_prepared(self, left: PreparedEye, right: PreparedEye,
                         before_inference: Callable[[], bool] | None = None) -> ExamResult | None:
        """One prepared pair to its result: the verdict, else the network. ``before_inference``
        is the caller's hook between the two (the node's action reports its INFERRING stage
        there); when it returns False the exam stops and None is returned (a cancelled goal
        costs no inference). The one place that sequences a pair: the node calls this, the
        offline tools `examine_all`, both through `verdict` and `infer`."""
        result = self.verdict(left, right)
        if result is not None:
            return result
        if before_inference is not None and not before_inference():
            return None
        return self.infer([(left, right)])[0]

    @staticmethod
    def _timings(left: PreparedEye, right: PreparedEye) -> dict[str, float]:
        return {"preprocess": max(left.prepare_ms, right.prepare_ms)}

    def examine(self, left: Eye, right: Eye) -> ExamResult:
        """One pair, start to end."""
        return next(self.examine_all([(None, left, right)], batch_size=1))[1]

    def examine_all(self, items: Iterable[tuple[Tag, Eye, Eye]],
                    batch_size: int = 8) -> Iterator[tuple[Tag, ExamResult]]:
        """``(tag, left, right)`` pairs -> ``(tag, result)`` in the same order, inferring in
        batches of ``batch_size`` (the tag is the caller's: a stamp pair, a patient)."""
        pending: list[tuple[Tag, PreparedEye, PreparedEye, ExamResult | None]] = []

        def flush() -> Iterator[tuple[Tag, ExamResult]]:
            to_infer = [p for p in pending
                        if p[3] is None or (self.infer_ungradable and p[3].status is ExamStatus.UNGRADABLE)]
            inferred = iter(self.infer([(p[1], p[2]) for p in to_infer], [p[3] for p in to_infer]))
            done = {id(p): next(inferred) for p in to_infer}
            for p in pending:
                yield p[0], done.get(id(p), p[3])
            pending.clear()

        for tag, left, right in items:
            l, r = self.prepare_eye(left), self.prepare_eye(right)
            pending.append((tag, l, r, self.verdict(l, r)))
            if sum(1 for p in pending if p[1].image is not None and p[2].image is not None) >= batch_size:
                yield from flush()
        yield from flush()
