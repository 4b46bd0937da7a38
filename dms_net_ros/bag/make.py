"""`dms-net-bag make`: an ODIR folder -> a rosbag2 exam recording with a labels sidecar.

The bag looks like what the robot records: per patient a ``std_msgs/String`` on
``exam_id``, then the left and right eye on the node's input topics (``sensor_msgs/Image``
rgb8, or ``CompressedImage`` on ``<topic>/compressed``), each with its own frame_id and a
header stamp from an acquisition model:

- ``simultaneous``: both eyes at the patient's slot time (two cameras triggered together),
  the right eye offset by uniform noise in ``[-jitter, +jitter]``;
- ``sequential``: left first, right ``eye_delay +- jitter`` seconds later (one camera moved
  between eyes), which is what exercises the node's approximate-time pairing slop.

Patients are ``period`` seconds apart; log time equals header stamp, so replaying at the
recorded rate reproduces the acquisition timing. Compressed images carry the source JPEG
(or PNG) bytes unchanged, raw images carry exactly what `load_rgb` decodes, so evaluating
the bag and evaluating the folder see identical pixels. The sidecar ``labels.csv`` inside
the bag directory holds patient id, exam id, both eye stamps and the eight labels, so
results join to ground truth by exam id or stamps. The metadata records each topic's QoS
as ``ros2 bag record`` would (exam id latched: reliable + transient local; images reliable),
so ``ros2 bag play`` offers the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dms_net_core.data.odir import OdirFormatError, PatientRecord, load_odir, select_patients
from dms_net_core.data.preprocess import load_rgb
from dms_net_ros.bag import io

DEFAULT_LEFT_TOPIC = "left/image_raw"
DEFAULT_RIGHT_TOPIC = "right/image_raw"
DEFAULT_EXAM_TOPIC = "exam_id"
DEFAULT_START_TIME_S = 1_700_000_000.0  # fixed epoch: the same command makes the same bag

_PASSTHROUGH_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


@dataclass(frozen=True)
class AcquisitionModel:
    """How eye images are stamped: see the module docstring."""

    mode: str = "simultaneous"  # "simultaneous" | "sequential"
    period_s: float = 2.0
    eye_delay_s: float = 0.3
    jitter_s: float = 0.0
    start_time_s: float = DEFAULT_START_TIME_S
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("simultaneous", "sequential"):
            raise io.BagError(f"unknown acquisition {self.mode!r}: use simultaneous or sequential")
        if self.period_s <= 0 or self.eye_delay_s < 0 or self.jitter_s < 0:
            raise io.BagError("--period must be > 0 and --eye-delay/--jitter >= 0: fix the acquisition flags")
        span = (self.eye_delay_s if self.mode == "sequential" else 0.0) + self.jitter_s
        if span >= self.period_s / 2:
            raise io.BagError(f"eyes of one patient span up to {span:g} s "
                              f"but patients are only {self.period_s:g} s apart: "
                              f"raise --period above {2 * span:g} s so exams cannot be paired across patients")

    def stamps(self, count: int) -> list[tuple[int, int]]:
        """``(left_ns, right_ns)`` per patient; deterministic for a given seed."""
        rng = np.random.default_rng(self.seed)
        delay = self.eye_delay_s if self.mode == "sequential" else 0.0
        out = []
        for i in range(count):
            left_s = self.start_time_s + i * self.period_s
            noise = rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s > 0 else 0.0
            offset = delay + noise
            if self.mode == "sequential":
                offset = max(offset, 1e-3)  # the right eye never precedes the left one
            left_ns = round(left_s * 1e9)
            out.append((left_ns, left_ns + round(offset * 1e9)))
        return out

    def to_dict(self) -> dict:
        return {"mode": self.mode, "period_s": self.period_s, "eye_delay_s": self.eye_delay_s,
                "jitter_s": self.jitter_s, "start_time_s": self.start_time_s, "seed": self.seed}


@dataclass
class MakeSummary:
    bag: Path
    labels: Path
    storage: str
    patients: int
    messages: dict[str, int]
    skipped_missing_eye: int


def resolve_labels_file(dataset: Path) -> Path:
    """A dataset folder -> its label file (``labels.csv``, else the one official sheet)."""
    dataset = Path(dataset)
    if dataset.is_file():
        return dataset
    if not dataset.is_dir():
        raise io.BagError(f"dataset {dataset} does not exist: "
                          "pass an ODIR folder (labels.csv + images/) or its label file")
    if (dataset / "labels.csv").is_file():
        return dataset / "labels.csv"
    sheets = sorted(p for p in dataset.iterdir() if p.suffix.lower() in (".xlsx", ".csv"))
    if len(sheets) == 1:
        return sheets[0]
    found = ", ".join(p.name for p in sheets) or "none"
    raise io.BagError(f"cannot tell the label file in {dataset} (candidates: {found}): "
                      "pass the label file itself as DATASET")


def parse_patient_ids(spec: str) -> list[str]:
    """``--patients``: comma-separated ids, or a file with one id per line (first csv column;
    a ``patient_id`` header line is skipped)."""
    path = Path(spec)
    if path.is_file():
        ids = []
        for line in path.read_text().splitlines():
            first = line.split(",")[0].strip()
            if first and first != "patient_id" and not first.startswith("#"):
                ids.append(first)
        return ids
    return [p.strip() for p in spec.split(",") if p.strip()]


def load_records(dataset: Path, images_dir: Path | None, patients: str | None,
                 limit: int | None) -> tuple[list[PatientRecord], int]:
    try:
        loaded = load_odir(resolve_labels_file(dataset), images_dir)
        records = loaded.records
        if patients:
            records = select_patients(records, parse_patient_ids(patients), source="--patients")
    except OdirFormatError as err:
        raise io.BagError(str(err)) from err
    if limit is not None:
        records = records[: max(0, limit)]
    if not records:
        raise io.BagError(f"no patients with both eyes selected from {dataset}: check --patients/--limit")
    return records, len(loaded.skipped_missing_eye)


def compressed_payload(path: str) -> bytes:
    """Source file bytes for JPEG/PNG (no re-encoding, no generation loss), else lossless PNG."""
    suffix = Path(path).suffix.lower()
    if suffix in _PASSTHROUGH_FORMATS:
        data = Path(path).read_bytes()
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
            raise io.BagError(f"cannot decode image {path}: the file is corrupt; fix or drop that patient (--patients)")
        return data
    ok, buf = cv2.imencode(".png", cv2.cvtColor(load_rgb(path), cv2.COLOR_RGB2BGR))
    if not ok:
        raise io.BagError(f"cannot re-encode image {path} as PNG: convert it to JPEG or PNG first")
    return buf.tobytes()


def compressed_format(path: str) -> str:
    """image_transport's CompressedImage.format: ``<raw encoding>; <codec> compressed bgr8``."""
    codec = _PASSTHROUGH_FORMATS.get(Path(path).suffix.lower(), "png")
    return f"rgb8; {codec} compressed bgr8"


def make_bag(
    records: list[PatientRecord],
    output: Path,
    *,
    storage: str = "mcap",
    compressed: bool = False,
    left_topic: str = DEFAULT_LEFT_TOPIC,
    right_topic: str = DEFAULT_RIGHT_TOPIC,
    exam_topic: str = DEFAULT_EXAM_TOPIC,
    left_frame_id: str = "left_fundus_camera",
    right_frame_id: str = "right_fundus_camera",
    acquisition: AcquisitionModel | None = None,
    exam_prefix: str = "exam-",
    progress: bool = False,
    source: str = "",
    skipped_missing_eye: int = 0,
) -> MakeSummary:
    """Write the bag and its labels sidecar; returns what was written."""
    acquisition = acquisition or AcquisitionModel()
    output = Path(output)
    # rosbag2 records fully qualified names; a node in the root namespace resolves its
    # relative ``left/image_raw`` to ``/left/image_raw``.
    left_topic, right_topic, exam_topic = (_qualified(t) for t in (left_topic, right_topic, exam_topic))
    if compressed:
        left_topic, right_topic = _compressed_topic(left_topic), _compressed_topic(right_topic)
    image_type = io.COMPRESSED_IMAGE_TYPE if compressed else io.IMAGE_TYPE
    stamps = acquisition.stamps(len(records))
    exam_lead_ns = round(min(0.05, acquisition.period_s / 10) * 1e9)
    rows: list[io.LabelRow] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(records), desc=f"make {output.name}", unit="patient", dynamic_ncols=True)
    with io.BagWriter(output, storage) as writer:
        writer.set_custom_data("dms_net_bag", json.dumps({
            "tool": "dms-net-bag make", "source": source, "patients": len(records), "compressed": compressed,
            "acquisition": acquisition.to_dict(), "left_topic": left_topic, "right_topic": right_topic,
            "exam_topic": exam_topic,
        }, sort_keys=True))
        for record, (left_ns, right_ns) in zip(records, stamps):
            exam_id = f"{exam_prefix}{record.patient_id}"
            writer.write(exam_topic, io.STRING_TYPE, min(left_ns, right_ns) - exam_lead_ns, io.make_string(exam_id),
                         io.LATCHED_QOS)
            eyes = [(left_topic, record.left_path, left_ns, left_frame_id),
                    (right_topic, record.right_path, right_ns, right_frame_id)]
            for topic, path, stamp_ns, frame_id in sorted(eyes, key=lambda e: e[2]):
                if compressed:
                    msg = io.make_compressed_image(compressed_payload(path), stamp_ns, frame_id,
                                                   compressed_format(path))
                else:
                    try:
                        rgb = load_rgb(path)
                    except FileNotFoundError as err:
                        raise io.BagError(f"{err}; fix or drop that patient (--patients)") from err
                    msg = io.make_image(rgb, stamp_ns, frame_id)
                writer.write(topic, image_type, stamp_ns, msg, io.RELIABLE_QOS)
            rows.append(io.LabelRow(patient_id=record.patient_id, exam_id=exam_id, left_stamp_ns=left_ns,
                                    right_stamp_ns=right_ns, labels=np.asarray(record.labels, np.float32),
                                    left_file=str(record.left_path), right_file=str(record.right_path),
                                    left_keywords=record.keywords.get("left", ""),
                                    right_keywords=record.keywords.get("right", "")))
            if bar is not None:
                bar.update(1)
        counts = dict(writer.counts)
    if bar is not None:
        bar.close()
    labels_path = output / io.LABELS_FILENAME
    io.write_labels_sidecar(labels_path, rows)
    return MakeSummary(bag=output, labels=labels_path, storage=storage, patients=len(records), messages=counts,
                       skipped_missing_eye=skipped_missing_eye)


def _qualified(topic: str) -> str:
    return "/" + io.normalize_topic(topic)


def _compressed_topic(topic: str) -> str:
    topic = topic.rstrip("/")
    return topic if topic.endswith("/compressed") else topic + "/compressed"


def add_arguments(parser) -> None:
    parser.add_argument("dataset", type=Path,
                        help="ODIR folder (labels.csv + images/, or the official sheet) or its label file")
    parser.add_argument("output", type=Path, help="bag directory to create (must not exist)")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="images folder (official layout; default: the label file's folder)")
    parser.add_argument("--storage", choices=sorted(io.STORAGES), default="mcap",
                        help="rosbag2 storage plugin (default: mcap)")
    parser.add_argument("--compressed", action="store_true",
                        help="sensor_msgs/CompressedImage on <topic>/compressed (source JPEG bytes)")
    parser.add_argument("--left-topic", default=DEFAULT_LEFT_TOPIC)
    parser.add_argument("--right-topic", default=DEFAULT_RIGHT_TOPIC)
    parser.add_argument("--exam-topic", default=DEFAULT_EXAM_TOPIC, help="std_msgs/String published before each pair")
    parser.add_argument("--left-frame-id", default="left_fundus_camera")
    parser.add_argument("--right-frame-id", default="right_fundus_camera")
    parser.add_argument("--acquisition", choices=("simultaneous", "sequential"), default="simultaneous")
    parser.add_argument("--eye-delay", type=float, default=0.3,
                        help="sequential: seconds from left to right eye "
                             "(default 0.3; keep delay + jitter under the node's pairing slop)")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="uniform +- seconds on the right eye's offset (default 0)")
    parser.add_argument("--period", type=float, default=2.0, help="seconds between patients (default 2)")
    parser.add_argument("--start-time", type=float, default=DEFAULT_START_TIME_S,
                        help="stamp of the first patient, epoch seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    parser.add_argument("--limit", type=int, default=None, help="only the first N patients (after --patients)")
    parser.add_argument("--patients", default=None, help="comma-separated patient ids, or a file with one id per line")
    parser.add_argument("--exam-prefix", default="exam-", help="exam id = prefix + patient id")


def run(args) -> int:
    records, skipped = load_records(args.dataset, args.images_dir, args.patients, args.limit)
    acquisition = AcquisitionModel(mode=args.acquisition, period_s=args.period, eye_delay_s=args.eye_delay,
                                   jitter_s=args.jitter, start_time_s=args.start_time, seed=args.seed)
    summary = make_bag(records, args.output, storage=args.storage, compressed=args.compressed,
                       left_topic=args.left_topic, right_topic=args.right_topic, exam_topic=args.exam_topic,
                       left_frame_id=args.left_frame_id, right_frame_id=args.right_frame_id,
                       acquisition=acquisition, exam_prefix=args.exam_prefix, progress=not args.quiet,
                       source=str(args.dataset), skipped_missing_eye=skipped)
    topics = ", ".join(f"{t}: {n}" for t, n in summary.messages.items())
    print(f"wrote {summary.bag} ({summary.storage}, {summary.patients} patients; {topics}); labels {summary.labels}"
          + (f" ({skipped} patients of the dataset lack an eye and were left out)" if skipped else ""))
    return 0
