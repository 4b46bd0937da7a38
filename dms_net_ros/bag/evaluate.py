"""`dms-net-bag evaluate`: the node's data path run offline over a bag -> ODIR report.

"Offline" must mean "what the node would have said", so every stage is the node's own
code, not a re-implementation:

  bag messages in recording order
    -> `dms_net_ros.pairing.ApproximateTimePairer` (the node's slop/queue/timeout defaults;
       the pairer's clock is the bag's log time, as the node's is its receive time)
    -> `dms_net_ros.image_codec.msg_to_rgb`      (raw or compressed, from the connection type)
    -> `dms_net_core.data.quality.assess_quality` (the node's gate: UNGRADABLE status)
    -> `dms_net_core.data.preprocess.prepare_eye_uint8` with the bundle's PreprocessConfig (the backend normalises)
    -> `dms_net_core.runtime.create_backend`     (same backend choice as the node)

Each pair gets the exam id last published on the exam topic before its second eye (the
node's latched-topic rule). Pairs are joined to the labels sidecar by the two eye stamps,
else by exam id. Unpaired images (with the pairer's reason), undecodable images and
pairs without ground truth are counted and written out, never silently dropped.

Outputs in ``--output``: the evaluation report (`dms_net_core.report.write_report`, the same
writer as ``dms-net-eval``: ODIR official score, per class, per-eye AUC against the sidecar's
keywords when the model has per-eye heads, plots when matplotlib is installed), ``pairs.csv``
(one row per pair: stamps, exam id, status, probabilities, per-eye probabilities, labels) and
``bag_summary.json`` (topics, counts, drops).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dms_net_core.classes import CLASS_CODES
from dms_net_core.report import json_default
from dms_net_ros.bag import io

LOGGER = logging.getLogger("dms_net_ros.bag")

STATUS_OK, STATUS_UNGRADABLE, STATUS_ERROR = "ok", "ungradable", "error"
PAIR_FIELDS = ("exam_id", "patient_id", "left_stamp_ns", "right_stamp_ns", "status", "message",
               "left_quality", "right_quality", *(f"p_{c}" for c in CLASS_CODES), *(f"y_{c}" for c in CLASS_CODES),
               *(f"pl_{c}" for c in CLASS_CODES), *(f"pr_{c}" for c in CLASS_CODES))


@dataclass(frozen=True)
class PipelineSettings:
    """The node's knobs that change which pairs exist and what they contain."""

    slop_s: float = 0.5
    queue_size: int = 10
    timeout_s: float = 5.0
    quality_gate: bool = True
    quality_min_score: float = 0.0
    max_pixels: int | None = None

    def node_params(self) -> list[str]:
        """The same settings as ``name:=value`` node parameters (for ``replay --start-node``)."""
        params = [f"slop_s:={self.slop_s}", f"pair_timeout_s:={self.timeout_s}", f"pairing_queue_size:={self.queue_size}",
                  f"quality_gate:={'true' if self.quality_gate else 'false'}", f"quality_min_score:={self.quality_min_score}"]
        return params + ([f"max_pixels:={self.max_pixels}"] if self.max_pixels is not None else [])

    @classmethod
    def node_defaults(cls) -> "PipelineSettings":
        """The node's parameter defaults (pairing's own defaults are the node's)."""
        from dms_net_ros.pairing import ApproximateTimePairer
        import inspect

        params = inspect.signature(ApproximateTimePairer.__init__).parameters
        return cls(slop_s=float(params["slop_s"].default), queue_size=int(params["queue_size"].default),
                   timeout_s=float(params["timeout_s"].default))


@dataclass
class PairResult:
    """One left/right pair as the node would report it."""

    exam_id: str
    left_stamp_ns: int
    right_stamp_ns: int
    status: str = STATUS_OK
    message: str = "ok"
    probabilities: np.ndarray | None = None  # [8] float32 (also for UNGRADABLE: see evaluate_bag)
    left_quality: float = float("nan")
    right_quality: float = float("nan")
    patient_id: str = ""
    labels: np.ndarray | None = None
    left_probabilities: np.ndarray | None = None  # [8] per-eye head (models with per-eye heads)
    right_probabilities: np.ndarray | None = None
    keywords: tuple[str, str] | None = None  # (left, right) diagnostic keywords from the sidecar

    @property
    def stamp_ns(self) -> int:
        return max(self.left_stamp_ns, self.right_stamp_ns)


@dataclass
class BagEvaluation:
    """Everything `evaluate_bag` found, before the report is written."""

    bag: Path
    storage: str
    topics: dict[str, str]  # role -> "topic [type]"
    pairs: list[PairResult]
    unpaired: list[dict[str, Any]] = field(default_factory=list)  # eye, stamp_ns, reason, message
    received: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    unlabeled: int = 0
    unused_labels: list[str] = field(default_factory=list)  # exam ids / patient ids without a pair
    backend: str = ""

    def counts(self) -> dict[str, Any]:
        by_status = {s: sum(1 for p in self.pairs if p.status == s) for s in (STATUS_OK, STATUS_UNGRADABLE, STATUS_ERROR)}
        return {"received": self.received, "pairs": len(self.pairs), "pairs_by_status": by_status,
                "unpaired": len(self.unpaired), "pairing_drops": self.drops, "pairs_without_labels": self.unlabeled,
                "labels_without_pair": len(self.unused_labels)}


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class _Eye:
    msgtype: str
    raw: bytes
    log_ns: int


class BagPairs:
    """Iterate ``(pairing.Pair, exam_id)`` in the order the node would form them.

    Items stay raw CDR bytes until paired (a long robot bag does not fit in memory
    decoded). After iteration, ``stats`` is the pairer's `PairingStats` and ``unpaired``
    lists every message that left without a partner, with the pairer's reason.
    """

    def __init__(self, reader: io.BagReader, left: io.TopicMatch, right: io.TopicMatch, exam: io.TopicMatch | None,
                 settings: PipelineSettings, *, progress: bool = False):
        from dms_net_ros.pairing import ApproximateTimePairer

        self.reader, self.left, self.right, self.exam, self.progress = reader, left, right, exam, progress
        self.pairer = ApproximateTimePairer(slop_s=settings.slop_s, queue_size=settings.queue_size, timeout_s=settings.timeout_s)
        self.unpaired: list[dict[str, Any]] = []

    @property
    def stats(self) -> Any:
        return self.pairer.stats

    def _drop(self, items: list[Any]) -> None:
        for item in items:
            self.unpaired.append({"eye": item.eye, "stamp_ns": item.stamp_ns, "reason": item.reason, "message": item.describe()})

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
                stamp_ns = io.stamp_to_ns(io.deserialize(raw, conn.msgtype).header.stamp)
            except Exception as err:  # noqa: BLE001 - a message that does not deserialize is an input error
                self.stats.received[eye] += 1
                self.unpaired.append({"eye": eye, "stamp_ns": log_ns, "reason": "undecodable",
                                      "message": f"{eye} message at log time {now:.3f} does not deserialize as {conn.msgtype}: {err}"})
                continue
            self._drop(self.pairer.expire(now))
            out = self.pairer.add(eye, stamp_ns, _Eye(conn.msgtype, bytes(raw), log_ns), received=now)
            self._drop(out.unpaired)
            for pair in out.pairs:
                yield pair, current_exam
        # End of bag: the node's timer expires what is left once the timeout has passed.
        self._drop(self.pairer.expire(float("inf")))


# --------------------------------------------------------------------------- decode, gate, infer


def _decode(eye: _Eye, max_pixels: int | None) -> np.ndarray:
    from dms_net_ros.image_codec import msg_to_rgb

    msg = io.deserialize(eye.raw, eye.msgtype)
    return msg_to_rgb(msg) if max_pixels is None else msg_to_rgb(msg, max_pixels)


def prepare_pair(pair: Any, exam_id: str, preprocess_cfg: Any, settings: PipelineSettings) -> tuple[PairResult, tuple[np.ndarray, np.ndarray] | None]:
    """Decode, quality-gate and preprocess one pair; returns the result so far and the inputs."""
    from dms_net_core.data.preprocess import prepare_eye_uint8
    from dms_net_ros.image_codec import ImageDecodeError

    result = PairResult(exam_id=exam_id, left_stamp_ns=pair.left_stamp_ns, right_stamp_ns=pair.right_stamp_ns)
    images = {}
    for eye, item in (("left", pair.left), ("right", pair.right)):
        try:
            images[eye] = _decode(item, settings.max_pixels)
        except ImageDecodeError as err:
            result.status, result.message = STATUS_ERROR, f"{eye}: {err}"
            return result, None
    if settings.quality_gate:
        from dms_net_ros.eye_pipeline import grade_eye

        reasons = []
        for eye in ("left", "right"):
            report = grade_eye(images[eye], settings.quality_min_score)
            setattr(result, f"{eye}_quality", float(report.score))
            reasons += [f"{eye}: {r}" for r in report.reasons] if not report.gradable else []
        if reasons:
            result.status, result.message = STATUS_UNGRADABLE, "; ".join(reasons)
    # prepared uint8, as the node hands them over; the backend normalises
    inputs = (prepare_eye_uint8(images["left"], preprocess_cfg), prepare_eye_uint8(images["right"], preprocess_cfg))
    return result, inputs


def run_pipeline(pairs: Iterator[tuple[Any, str]], backend: Any, preprocess_cfg: Any, settings: PipelineSettings,
                 batch_size: int = 8) -> list[PairResult]:
    """Decode/gate/preprocess each pair, infer in batches; ERROR pairs get no probabilities.

    UNGRADABLE pairs are still inferred (the node publishes no probabilities for them; the
    report counts them apart) so QA can see what the gate withheld.
    """
    results: list[PairResult] = []
    batch: list[tuple[PairResult, tuple[np.ndarray, np.ndarray]]] = []

    def flush() -> None:
        if not batch:
            return
        left = np.stack([x[1][0] for x in batch])
        right = np.stack([x[1][1] for x in batch])
        out = backend.infer(left, right)
        probs = np.asarray(out.probabilities, dtype=np.float32)
        for k, ((res, _), p) in enumerate(zip(batch, probs)):
            res.probabilities = p
            if out.left_probabilities is not None and out.right_probabilities is not None:
                res.left_probabilities = np.asarray(out.left_probabilities[k], np.float32)
                res.right_probabilities = np.asarray(out.right_probabilities[k], np.float32)
        batch.clear()

    for pair, exam_id in pairs:
        res, inputs = prepare_pair(pair, exam_id, preprocess_cfg, settings)
        results.append(res)
        if inputs is not None:
            batch.append((res, inputs))
            if len(batch) >= batch_size:
                flush()
    flush()
    return results


# --------------------------------------------------------------------------- ground truth


def join_labels(results: list[PairResult], rows: list[io.LabelRow], slop_ns: int) -> tuple[int, list[str]]:
    """Attach ground truth: by the two eye stamps (exact), else by exam id, else by the
    nearest pair stamp within the pairing slop (bags re-stamped on a robot). Stamps come
    first because they travel inside the image messages, while an exam id is a separate
    topic that can be late. Returns
    ``(pairs_without_labels, labels_without_pair)``."""
    by_exam = {r.exam_id: r for r in rows if r.exam_id}
    by_stamps = {(r.left_stamp_ns, r.right_stamp_ns): r for r in rows if r.left_stamp_ns or r.right_stamp_ns}
    used: set[int] = set()
    unlabeled = 0
    for res in results:
        row = by_stamps.get((res.left_stamp_ns, res.right_stamp_ns))
        if (row is None or id(row) in used) and res.exam_id:
            row = by_exam.get(res.exam_id)
        if row is None:
            near = [r for r in rows if (r.left_stamp_ns or r.right_stamp_ns) and id(r) not in used
                    and abs(max(r.left_stamp_ns, r.right_stamp_ns) - res.stamp_ns) <= slop_ns]
            row = min(near, key=lambda r: abs(max(r.left_stamp_ns, r.right_stamp_ns) - res.stamp_ns)) if near else None
        if row is None or id(row) in used:
            unlabeled += 1
            continue
        used.add(id(row))
        res.patient_id, res.labels = row.patient_id, row.labels
        res.keywords = (row.left_keywords, row.right_keywords)
    unused = [r.exam_id or r.patient_id for r in rows if id(r) not in used]
    return unlabeled, unused


# --------------------------------------------------------------------------- top level


def evaluate_bag(bag: Path, backend: Any, preprocess_cfg: Any, *, left_topic: str = "left/image_raw",
                 right_topic: str = "right/image_raw", exam_topic: str = "exam_id", labels: Path | None = None,
                 use_labels: bool = True, settings: PipelineSettings | None = None, batch_size: int = 8,
                 progress: bool = False) -> BagEvaluation:
    """Run the node's pipeline over ``bag``; see the module docstring."""
    settings = settings or PipelineSettings.node_defaults()
    bag = Path(bag)
    label_rows = io.read_labels_sidecar(io.find_labels_sidecar(bag, labels)) if use_labels else []
    with io.BagReader(bag) as reader:
        left = reader.find_image_topic(left_topic, "--left-topic")
        right = reader.find_image_topic(right_topic, "--right-topic")
        if left.topic == right.topic:
            raise io.BagError(f"--left-topic and --right-topic both resolve to {left.topic} in {bag}: give each eye its own topic")
        exam = reader.find_topic(exam_topic, (io.STRING_TYPE,), required=False) if exam_topic else None
        pairs = BagPairs(reader, left, right, exam, settings, progress=progress)
        results = run_pipeline(iter(pairs), backend, preprocess_cfg, settings, batch_size)
        stats, unpaired = pairs.stats, pairs.unpaired
        storage = reader.storage
    evaluation = BagEvaluation(
        bag=bag, storage=storage,
        topics={"left": f"{left.topic} [{left.msgtype}]", "right": f"{right.topic} [{right.msgtype}]",
                "exam_id": f"{exam.topic} [{exam.msgtype}]" if exam else "(none)"},
        pairs=results, unpaired=unpaired, received=dict(stats.received), drops=dict(stats.drops),
        backend=backend.describe())
    if use_labels:
        evaluation.unlabeled, evaluation.unused_labels = join_labels(results, label_rows, int(round(settings.slop_s * 1e9)))
    return evaluation


def scored_pairs(pairs: list[PairResult], include_ungradable: bool = True) -> list[PairResult]:
    """Pairs that enter the metrics: labelled, with probabilities (ERROR pairs have none)."""
    ok = {STATUS_OK, STATUS_UNGRADABLE} if include_ungradable else {STATUS_OK}
    return [p for p in pairs if p.labels is not None and p.probabilities is not None and p.status in ok]


def write_pairs_csv(path: Path, pairs: list[PairResult]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PAIR_FIELDS)
        for p in pairs:
            labels = [str(int(v)) for v in p.labels] if p.labels is not None else [""] * len(CLASS_CODES)
            writer.writerow([p.exam_id, p.patient_id, p.left_stamp_ns, p.right_stamp_ns, p.status, p.message,
                             f"{p.left_quality:.4f}", f"{p.right_quality:.4f}", *_prob_cells(p.probabilities), *labels,
                             *_prob_cells(p.left_probabilities), *_prob_cells(p.right_probabilities)])


def _prob_cells(values: np.ndarray | None) -> list[str]:
    return [f"{v:.8f}" for v in values] if values is not None else [""] * len(CLASS_CODES)


def _prob_column(rec: dict[str, str], prefix: str) -> np.ndarray | None:
    cells = [rec.get(f"{prefix}{c}") or "" for c in CLASS_CODES]
    return np.asarray(cells, np.float32) if all(cells) else None


def read_pairs_csv(path: Path) -> list[PairResult]:
    """Read back `write_pairs_csv` (replay compares against an earlier `evaluate` run)."""
    out = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            out.append(PairResult(
                exam_id=rec["exam_id"], left_stamp_ns=int(rec["left_stamp_ns"]), right_stamp_ns=int(rec["right_stamp_ns"]),
                status=rec["status"], message=rec["message"], patient_id=rec["patient_id"],
                left_quality=float(rec["left_quality"]), right_quality=float(rec["right_quality"]),
                probabilities=_prob_column(rec, "p_"), labels=_prob_column(rec, "y_"),
                left_probabilities=_prob_column(rec, "pl_"), right_probabilities=_prob_column(rec, "pr_")))
    return out


def write_outputs(evaluation: BagEvaluation, out_dir: Path, thresholds: np.ndarray, *, name: str = "bag",
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Report (`dms_net_core.report.write_report`) + pairs.csv + bag_summary.json; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pairs_csv(out_dir / "pairs.csv", evaluation.pairs)
    scored = scored_pairs(evaluation.pairs)
    summary: dict[str, Any] = {
        "bag": str(evaluation.bag), "storage": evaluation.storage, "topics": evaluation.topics,
        "backend": evaluation.backend, **evaluation.counts(), "scored_pairs": len(scored),
        "unpaired_messages": evaluation.unpaired[:200], "labels_without_pair_ids": evaluation.unused_labels[:200],
        **(extra or {}),
    }
    if scored:
        summary["report"] = write_metrics_report(out_dir, scored, thresholds, name=name)
    (out_dir / "bag_summary.json").write_text(json.dumps(summary, indent=2, default=json_default))
    return summary


def write_metrics_report(out_dir: Path, scored: list[PairResult], thresholds: np.ndarray, *, name: str) -> dict[str, Any]:
    """`dms_net_core.report.write_report` over the scored pairs, so bag and folder evaluations
    read the same on every install (a robot without ``training/`` or matplotlib included):
    per-eye AUC when every pair has per-eye probabilities and the sidecar has keywords."""
    from dms_net_core.data.eye_labels import eye_label_matrices
    from dms_net_core.report import write_report

    labels = np.stack([p.labels for p in scored]).astype(np.float32)
    probs = np.stack([p.probabilities for p in scored]).astype(np.float32)
    eye_probs = eye_labels = None
    if all(p.left_probabilities is not None and p.right_probabilities is not None for p in scored):
        eye_probs = {"left": np.stack([p.left_probabilities for p in scored]), "right": np.stack([p.right_probabilities for p in scored])}
    if any(p.keywords and any(p.keywords) for p in scored):
        eye_labels = eye_label_matrices(p.keywords or ("", "") for p in scored)
    return write_report(labels, probs, thresholds, out_dir, name=name, eye_labels=eye_labels, eye_probs=eye_probs,
                        provenance={"source": "rosbag", "pairs": len(scored)})



def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: counts, drops, official score."""
    lines = [f"bag {summary['bag']} ({summary['storage']}): left {summary['topics']['left']}, right {summary['topics']['right']}",
             f"  received {summary['received']}; pairs {summary['pairs']} {summary['pairs_by_status']}; "
             f"unpaired messages {summary['unpaired']} {summary['pairing_drops']}",
             f"  pairs without labels {summary['pairs_without_labels']}; labels without pair {summary['labels_without_pair']}; "
             f"scored {summary['scored_pairs']}; backend {summary['backend']}"]
    official = (summary.get("report") or {}).get("official")
    if official:
        lines.append("  ODIR official: " + ", ".join(f"{k} {official[k]:.4f}" for k in ("kappa", "f1", "auc", "final")))
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def add_backend_arguments(parser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))


def add_topic_arguments(parser) -> None:
    parser.add_argument("--left-topic", default="left/image_raw", help="left eye topic in the bag (raw or <topic>/compressed found automatically)")
    parser.add_argument("--right-topic", default="right/image_raw")
    parser.add_argument("--exam-topic", default="exam_id", help="std_msgs/String exam id topic ('' for none)")
    parser.add_argument("--labels", type=Path, default=None, help="labels sidecar (default: <bag>/labels.csv or <bag>.labels.csv)")
    parser.add_argument("--no-labels", action="store_true", help="no ground truth: probabilities and counts only")


def add_pipeline_arguments(parser) -> None:
    defaults = PipelineSettings.node_defaults()
    parser.add_argument("--slop", type=float, default=defaults.slop_s, help=f"pairing slop, seconds (node default {defaults.slop_s})")
    parser.add_argument("--queue-size", type=int, default=defaults.queue_size, help="pairing queue per eye (node default)")
    parser.add_argument("--pair-timeout", type=float, default=defaults.timeout_s, help="seconds an eye waits for its partner")
    parser.add_argument("--no-quality-gate", action="store_true", help="the node's quality_gate parameter set to false")
    parser.add_argument("--quality-min-score", type=float, default=0.0, help="the node's quality_min_score parameter")
    parser.add_argument("--max-pixels", type=int, default=None, help="the node's max_pixels parameter (default: the node's)")


def add_arguments(parser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("bundle", type=Path, help="model bundle directory (dms-net-export)")
    parser.add_argument("--output", "-o", type=Path, default=None, help="report directory (default: <bag>_eval)")
    add_topic_arguments(parser)
    add_pipeline_arguments(parser)
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)


def settings_from_args(args) -> PipelineSettings:
    return PipelineSettings(slop_s=args.slop, queue_size=args.queue_size, timeout_s=args.pair_timeout,
                            quality_gate=not args.no_quality_gate, quality_min_score=args.quality_min_score,
                            max_pixels=args.max_pixels)


def load_bundle_and_backend(args) -> tuple[Any, Any]:
    from dms_net_core.bundle import BundleError, ModelBundle
    from dms_net_core.runtime import create_backend

    try:
        bundle = ModelBundle.load(args.bundle)
        backend = create_backend(bundle, backend=args.backend, device=args.device, precision=args.precision)
    except (BundleError, ValueError, RuntimeError, ImportError) as err:
        raise io.BagError(" ".join(str(err).split())) from err
    return bundle, backend


def run(args) -> int:
    bundle, backend = load_bundle_and_backend(args)
    try:
        evaluation = evaluate_bag(args.bag, backend, bundle.preprocess, left_topic=args.left_topic, right_topic=args.right_topic,
                                  exam_topic=args.exam_topic, labels=args.labels, use_labels=not args.no_labels,
                                  settings=settings_from_args(args), batch_size=args.batch_size, progress=not args.quiet)
    finally:
        backend.close()
    out_dir = args.output or args.bag.with_name(args.bag.name + "_eval")
    summary = write_outputs(evaluation, out_dir, bundle.thresholds, name=f"{args.bag.name} (offline)",
                            extra={"model_id": bundle.model_id})
    print(format_summary(summary))
    print(f"  wrote {out_dir}/pairs.csv, bag_summary.json and the report")
    return 0
