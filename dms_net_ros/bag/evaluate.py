"""`dms-net-bag evaluate`: the node's data path run offline over a bag -> ODIR report.

"Offline" must mean "what the node would have said", so every stage is the node's own
code, not a re-implementation:

  bag messages in recording order
    -> `bag_pairs.BagPairs`: the node's pairer and settings (the pairer's clock is the bag's
       log time, as the node's is its receive time)
    -> `pair_preparer.decode_eye`: the node's decoding (raw or compressed, from the connection type)
    -> `dms_net_core.exam_pipeline.ExamPipeline`: the node's grading, preparation, inference
       (in batches here) and thresholds, with the backend chosen as the node chooses

Each pair gets the exam id last published on the exam topic before its second eye (the
node's latched-topic rule). UNGRADABLE pairs are still inferred (the node publishes no
probabilities for them; the report counts them apart) so QA can see what the gate withheld.
Pairs are joined to the labels sidecar by the two eye stamps,
else by exam id. Unpaired images (with the pairer's reason), undecodable images and
pairs without ground truth are counted and written out, never silently dropped.

Outputs in ``--output``: the evaluation report (`dms_net_core.report.write_report`, the same
writer as ``dms-net-eval``: ODIR official score, per class, per-eye AUC against the sidecar's
keywords when the model has per-eye heads, plots when matplotlib is installed), ``pairs.csv``
(one row per pair: stamps, exam id, status, probabilities, per-eye probabilities, labels) and
``bag_summary.json`` (topics, counts, drops).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dms_net_core.exam_pipeline import ExamPipeline
from dms_net_core.json_safe import json_default
from dms_net_ros.bag import io
from dms_net_ros.bag.arguments import (
    add_backend_arguments,
    add_pipeline_arguments,
    add_topic_arguments,
    load_bundle_and_backend,
    settings_from_args,
)
from dms_net_ros.bag.bag_pairs import BagPairs
from dms_net_ros.bag.pair_results import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNGRADABLE,
    PairResult,
    scored_pairs,
    write_pairs_csv,
)
from dms_net_ros.node_parameters import PipelineSettings
from dms_net_ros.pair_preparer import decode_eye

LOGGER = logging.getLogger("dms_net_ros.bag")


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
        by_status = {s: sum(1 for p in self.pairs if p.status == s)
                     for s in (STATUS_OK, STATUS_UNGRADABLE, STATUS_ERROR)}
        return {"received": self.received, "pairs": len(self.pairs), "pairs_by_status": by_status,
                "unpaired": len(self.unpaired), "pairing_drops": self.drops, "pairs_without_labels": self.unlabeled,
                "labels_without_pair": len(self.unused_labels)}


# --------------------------------------------------------------------------- the exam pipeline


def run_pipeline(pairs: Iterator[tuple[Any, str]], pipeline: ExamPipeline, settings: PipelineSettings,
                 batch_size: int = 8) -> list[PairResult]:
    """Each bag pair through the node's decoding and the exam pipeline (inference in batches)."""
    def eyes() -> Iterator[tuple[tuple[Any, str], Any, Any]]:
        for pair, exam_id in pairs:
            yield ((pair, exam_id), decode_eye(pair.left.message(), settings.decode.max_pixels),
                   decode_eye(pair.right.message(), settings.decode.max_pixels))

    return [PairResult.from_exam(exam_id, pair.left_stamp_ns, pair.right_stamp_ns, result)
            for (pair, exam_id), result in pipeline.examine_all(eyes(), batch_size)]


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


def evaluate_bag(bag: Path, bundle: Any, backend: Any, *, left_topic: str = "left/image_raw",
                 right_topic: str = "right/image_raw", exam_topic: str = "exam_id", labels: Path | None = None,
                 use_labels: bool = True, settings: PipelineSettings | None = None, batch_size: int = 8,
                 progress: bool = False) -> BagEvaluation:
    """Run the node's pipeline over ``bag`` with ``bundle``'s model on ``backend``; see the module docstring."""
    settings = settings or PipelineSettings()
    pipeline = ExamPipeline.for_bundle(bundle, backend, settings.exam, infer_ungradable=True)
    bag = Path(bag)
    label_rows = io.read_labels_sidecar(io.find_labels_sidecar(bag, labels)) if use_labels else []
    with io.BagReader(bag) as reader:
        left = reader.find_image_topic(left_topic, "--left-topic")
        right = reader.find_image_topic(right_topic, "--right-topic")
        if left.topic == right.topic:
            raise io.BagError(f"--left-topic and --right-topic both resolve to {left.topic} in {bag}: "
                              "give each eye its own topic")
        exam = reader.find_topic(exam_topic, (io.STRING_TYPE,), required=False) if exam_topic else None
        pairs = BagPairs(reader, left, right, exam, settings.pairing, progress=progress)
        results = run_pipeline(iter(pairs), pipeline, settings, batch_size)
        stats, unpaired = pairs.stats, pairs.unpaired
        storage = reader.storage
    evaluation = BagEvaluation(
        bag=bag, storage=storage,
        topics={"left": f"{left.topic} [{left.msgtype}]", "right": f"{right.topic} [{right.msgtype}]",
                "exam_id": f"{exam.topic} [{exam.msgtype}]" if exam else "(none)"},
        pairs=results, unpaired=unpaired, received=dict(stats.received), drops=dict(stats.drops),
        backend=backend.describe())
    if use_labels:
        evaluation.unlabeled, evaluation.unused_labels = join_labels(results, label_rows,
                                                                     int(round(settings.pairing.slop_s * 1e9)))
    return evaluation


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


def write_metrics_report(out_dir: Path, scored: list[PairResult], thresholds: np.ndarray, *,
                         name: str) -> dict[str, Any]:
    """`dms_net_core.report.write_report` over the scored pairs, so bag and folder evaluations
    read the same on every install (a robot without ``training/`` or matplotlib included):
    per-eye AUC when every pair has per-eye probabilities and the sidecar has keywords."""
    from dms_net_core.data.eye_labels import eye_label_matrices
    from dms_net_core.report import write_report

    labels = np.stack([p.labels for p in scored]).astype(np.float32)
    probs = np.stack([p.probabilities for p in scored]).astype(np.float32)
    eye_probs = eye_labels = None
    if all(p.left_probabilities is not None and p.right_probabilities is not None for p in scored):
        eye_probs = {"left": np.stack([p.left_probabilities for p in scored]),
                     "right": np.stack([p.right_probabilities for p in scored])}
    if any(p.keywords and any(p.keywords) for p in scored):
        eye_labels = eye_label_matrices(p.keywords or ("", "") for p in scored)
    return write_report(labels, probs, thresholds, out_dir, name=name, eye_labels=eye_labels, eye_probs=eye_probs,
                        provenance={"source": "rosbag", "pairs": len(scored)})



def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: counts, drops, official score."""
    lines = [f"bag {summary['bag']} ({summary['storage']}): left {summary['topics']['left']}, "
             f"right {summary['topics']['right']}",
             f"  received {summary['received']}; pairs {summary['pairs']} {summary['pairs_by_status']}; "
             f"unpaired messages {summary['unpaired']} {summary['pairing_drops']}",
             f"  pairs without labels {summary['pairs_without_labels']}; "
             f"labels without pair {summary['labels_without_pair']}; "
             f"scored {summary['scored_pairs']}; backend {summary['backend']}"]
    official = (summary.get("report") or {}).get("official")
    if official:
        lines.append("  ODIR official: " + ", ".join(f"{k} {official[k]:.4f}" for k in ("kappa", "f1", "auc", "final")))
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("bundle", type=Path, help="model bundle directory (dms-net-export)")
    parser.add_argument("--output", "-o", type=Path, default=None, help="report directory (default: <bag>_eval)")
    add_topic_arguments(parser)
    add_pipeline_arguments(parser)
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)


def run(args) -> int:
    bundle, backend = load_bundle_and_backend(args)
    try:
        evaluation = evaluate_bag(args.bag, bundle, backend, left_topic=args.left_topic, right_topic=args.right_topic,
                                  exam_topic=args.exam_topic, labels=args.labels, use_labels=not args.no_labels,
                                  settings=settings_from_args(args), batch_size=args.batch_size,
                                  progress=not args.quiet)
    finally:
        backend.close()
    out_dir = args.output or args.bag.with_name(args.bag.name + "_eval")
    summary = write_outputs(evaluation, out_dir, bundle.thresholds, name=f"{args.bag.name} (offline)",
                            extra={"model_id": bundle.model_id})
    print(format_summary(summary))
    print(f"  wrote {out_dir}/pairs.csv, bag_summary.json and the report")
    return 0
