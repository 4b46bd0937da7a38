"""rosbag2 reading and writing for the bag tools, without ROS (pure-Python `rosbags`).

Everything that touches a bag file goes through here so that every failure a QA engineer
can hit (missing metadata.yaml, truncated or corrupt storage file, a bag from another
robot without our topics, a missing labels sidecar) surfaces as one `BagError` line that
names the cause and the fix, instead of a stack trace from deep inside a storage plugin.

The type store is ROS 2 Kilted's (rosbags' hashes equal rosidl's, so bags written here
replay through rclpy and open in `ros2 bag`) plus `dms_net_ros/msg/DiagnosisResult`
parsed from the package's own ``msg/DiagnosisResult.msg``, so recorded results can be
written and decoded without the colcon-built message package.
"""

from __future__ import annotations

import csv
import functools
import os
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from dms_net_core.classes import CLASS_CODES
from dms_net_core.errors import one_line

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"
DIAGNOSIS_RESULT_TYPE = "dms_net_ros/msg/DiagnosisResult"
DIAGNOSTIC_ARRAY_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_INFINITE = QosTime(2147483647, 4294967295)  # how rosbag2 writes an infinite deadline/lifespan/lease


def offered_qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """One ``offered_qos_profiles`` entry as ``ros2 bag record`` writes it (a player offers it)."""
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               _INFINITE, _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, avoid_ros_namespace_conventions=False)


#: What `dms-net-bag make` records for its topics: without it `ros2 bag play` falls back to
#: reliable + volatile, and a latched exam id published that way reached no latched
#: subscriber (issue 16).
RELIABLE_QOS = (offered_qos(reliable=True, depth=10),)
LATCHED_QOS = (offered_qos(reliable=True, transient_local=True, depth=1),)

#: Sidecar with the ground truth of a bag made by `dms-net-bag make`.
LABELS_FILENAME = "labels.csv"
LABEL_FIELDS = ("patient_id", "exam_id", "left_stamp_ns", "right_stamp_ns", "left_file", "right_file", *CLASS_CODES,
                "left_keywords", "right_keywords")

# What a damaged storage file raises from inside rosbags (mcap parser, sqlite, CDR).
_STORAGE_ERRORS = (ReaderError, sqlite3.Error, struct.error, EOFError, SerdeError, ValueError, KeyError, IndexError)


class BagError(RuntimeError):
    """A user-facing bag problem; ``str(err)`` is one line naming the cause and the fix."""


# --------------------------------------------------------------------------- types


def diagnosis_msg_path() -> Path:
    """Find ``DiagnosisResult.msg``: the source checkout first, then the ament install."""
    here = Path(__file__).resolve().parents[2] / "msg" / "DiagnosisResult.msg"
    if here.is_file():
        return here
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidate = Path(prefix) / "share" / "dms_net_ros" / "msg" / "DiagnosisResult.msg"
            if candidate.is_file():
                return candidate
    raise BagError("cannot find msg/DiagnosisResult.msg: "
                   "run from the repository checkout or source the colcon install (scripts/env.sh)")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted's standard messages plus our DiagnosisResult (cached, read-only use)."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(diagnosis_msg_path().read_text(), DIAGNOSIS_RESULT_TYPE))
    return store


def serialize(message: object, msgtype: str) -> bytes:
    """Message object -> CDR bytes (what rclpy's ``publish(bytes)`` expects)."""
    return bytes(typestore().serialize_cdr(message, msgtype))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    return typestore().deserialize_cdr(raw, msgtype)


def ns_to_stamp(ns: int) -> Any:
    time_cls = typestore().types["builtin_interfaces/msg/Time"]
    return time_cls(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(stamp_ns: int, frame_id: str) -> Any:
    header_cls = typestore().types["std_msgs/msg/Header"]
    return header_cls(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def make_image(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """RGB uint8 HxWx3 -> sensor_msgs/Image (rgb8, tightly packed, little endian)."""
    image_cls = typestore().types[IMAGE_TYPE]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return image_cls(header=make_header(stamp_ns, frame_id), height=h, width=w, encoding="rgb8",
                     is_bigendian=0, step=w * 3, data=rgb.reshape(-1))


def make_compressed_image(payload: bytes, stamp_ns: int, frame_id: str, fmt: str = "rgb8; jpeg compressed bgr8") -> Any:
    """Encoded bytes -> sensor_msgs/CompressedImage; ``fmt`` follows image_transport's
    ``<raw encoding>; <codec> compressed <encoded encoding>`` convention."""
    compressed_cls = typestore().types[COMPRESSED_IMAGE_TYPE]
    return compressed_cls(header=make_header(stamp_ns, frame_id), format=fmt,
                          data=np.frombuffer(payload, dtype=np.uint8))


def make_string(text: str) -> Any:
    return typestore().types[STRING_TYPE](data=text)


# --------------------------------------------------------------------------- reading


def normalize_topic(topic: str) -> str:
    """Compare topics without the leading slash: a relative ``left/image_raw`` published by a
    node in the root namespace is recorded as ``/left/image_raw``."""
    return topic.strip().lstrip("/")


@dataclass(frozen=True)
class TopicMatch:
    """A bag connection chosen for a role (left eye, right eye, exam id, results)."""

    topic: str  # as recorded in the bag
    msgtype: str
    connections: tuple[Connection, ...]
    count: int


class BagReader:
    """Context manager over `rosbags.rosbag2.Reader` with one-line errors and topic lookup."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader: Reader | None = None

    def __enter__(self) -> "BagReader":
        self._reader = open_reader(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged bag must not hide the first error
                pass
            self._reader = None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise RuntimeError("BagReader used outside its with-block")
        return self._reader

    @property
    def storage(self) -> str:
        """``mcap`` or ``sqlite3``, from the storage files' suffixes (for reports)."""
        suffixes = {p.suffix for p in self.path.iterdir()} if self.path.is_dir() else {self.path.suffix}
        return "sqlite3" if ".db3" in suffixes else "mcap"

    def topics(self) -> dict[str, str]:
        """Recorded topic -> message type, for error messages and reports."""
        return {c.topic: c.msgtype for c in self.reader.connections}

    def describe_topics(self) -> str:
        topics = self.topics()
        if not topics:
            return "the bag has no topics"
        return "the bag has: " + ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items()))

    def find_topic(self, topic: str, msgtypes: Sequence[str] | None = None, *, required: bool = True,
                   flag: str = "") -> TopicMatch | None:
        """Find a topic by name: exact (ignoring the leading slash), else the one recorded topic
        that ends with it (a node in a namespace, e.g. ``/robot/left/image_raw``)."""
        wanted = normalize_topic(topic)
        conns = [c for c in self.reader.connections if msgtypes is None or c.msgtype in msgtypes]
        exact = [c for c in conns if normalize_topic(c.topic) == wanted]
        if exact:
            chosen = exact
        else:
            suffix = [c for c in conns if normalize_topic(c.topic).endswith("/" + wanted)]
            names = sorted({c.topic for c in suffix})
            if len(names) > 1:
                raise BagError(f"topic {topic!r} is ambiguous in {self.path} ({', '.join(names)}): "
                               f"pass the full name with {flag or 'the topic flag'}")
            chosen = suffix
        if not chosen:
            if not required:
                return None
            kinds = f" of type {' or '.join(msgtypes)}" if msgtypes else ""
            hint = f"; choose one with {flag}" if flag else ""
            raise BagError(f"no topic {topic!r}{kinds} in {self.path}: {self.describe_topics()}{hint}")
        types = sorted({c.msgtype for c in chosen})
        if len(types) > 1:
            raise BagError(f"topic {chosen[0].topic!r} carries several types {types} in {self.path}: "
                           "re-record it with one type")
        return TopicMatch(topic=chosen[0].topic, msgtype=types[0], connections=tuple(chosen),
                          count=sum(c.msgcount for c in chosen))

    def find_image_topic(self, topic: str, flag: str) -> TopicMatch:
        """An eye's image topic: ``topic`` itself (Image or CompressedImage), else the
        image_transport ``topic/compressed``; raw wins when both were recorded."""
        match = self.find_topic(topic, IMAGE_TYPES, required=False, flag=flag)
        if match is None and not normalize_topic(topic).endswith("/compressed"):
            match = self.find_topic(topic.rstrip("/") + "/compressed", (COMPRESSED_IMAGE_TYPE,), required=False,
                                    flag=flag)
        if match is None:
            raise BagError(f"no image topic {topic!r} (sensor_msgs/Image or {topic}/compressed) in {self.path}: "
                           f"{self.describe_topics()}; choose the eye's topic with {flag}")
        return match

    def messages(self, matches: Iterable[TopicMatch | None], *, progress: bool = False,
                 desc: str = "reading bag") -> Iterator[tuple[Connection, int, bytes]]:
        """Messages of the given topics in recording (log-time) order as ``(connection,
        log_time_ns, raw_cdr)``; a damaged storage file raises `BagError` mid-stream."""
        conns = [c for m in matches if m is not None for c in m.connections]
        total = sum(c.msgcount for c in conns)
        bar = _progress(total, desc, progress)
        try:
            for conn, log_ns, raw in self.reader.messages(connections=conns):
                yield conn, log_ns, raw
                if bar is not None:
                    bar.update(1)
        except _STORAGE_ERRORS as err:
            raise BagError(f"bag {self.path} is truncated or corrupt ({one_line(err, limit=199)}): "
                           "re-copy or re-record it "
                           f"(an mcap cut off by a crash can be salvaged with `mcap recover`)") from err
        finally:
            if bar is not None:
                bar.close()


def open_reader(path: Path) -> Reader:
    """Open a rosbag2 directory (or a bare .mcap/.db3 file) with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist: check the path")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        storage = sorted(p.name for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        fix = (f"pass the storage file itself ({path / storage[0]}) or run `ros2 bag reindex {path}`" if storage
               else "point at a rosbag2 directory (it holds metadata.yaml and a .mcap or .db3 file)")
        raise BagError(f"bag {path} has no metadata.yaml: {fix}")
    try:
        reader = Reader(path)
        reader.open()
    except FileNotFoundError as err:
        raise BagError(f"cannot open bag {path}: {one_line(err, limit=199)}; check the path") from err
    except _STORAGE_ERRORS as err:
        raise BagError(f"bag {path} is truncated or corrupt ({one_line(err, limit=199)}): re-copy or re-record it "
                       f"(an mcap cut off by a crash can be salvaged with `mcap recover`)") from err
    return reader


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="msg", leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- writing


class BagWriter:
    """`rosbags` writer with our type store; connections added on first use of a topic."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}: use one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} already exists: remove it or choose another path")
        self.storage = storage
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._connections: dict[tuple[str, str], Connection] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        try:
            self._writer.open()
        except (WriterError, OSError) as err:
            raise BagError(f"cannot create bag {self.path}: {one_line(err, limit=199)}; "
                           "check the directory is writable") from err
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self._writer.close()
        else:
            self._writer.abort()

    def set_custom_data(self, key: str, value: str) -> None:
        self._writer.set_custom_data(key, value)

    def write_raw(self, topic: str, msgtype: str, log_ns: int, raw: bytes | memoryview,
                  qos: Sequence[Qos] = ()) -> None:
        """Write one message; ``qos`` (the publisher's offered profiles) is recorded with the
        topic's first message, as ``ros2 bag record`` does."""
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore(), offered_qos_profiles=list(qos))
            self._connections[key] = conn
        self._writer.write(conn, int(log_ns), raw)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msgtype: str, log_ns: int, message: object, qos: Sequence[Qos] = ()) -> None:
        self.write_raw(topic, msgtype, log_ns, typestore().serialize_cdr(message, msgtype), qos)


# --------------------------------------------------------------------------- labels sidecar


def labels_sidecar_candidates(bag: Path) -> list[Path]:
    bag = Path(bag)
    return [bag / LABELS_FILENAME, bag.with_name(bag.name + ".labels.csv")]


def find_labels_sidecar(bag: Path, explicit: Path | None = None) -> Path:
    """The ground truth for a bag: ``--labels`` if given, else ``<bag>/labels.csv`` (written
    by `make`), else ``<bag>.labels.csv`` next to the bag (for bags recorded on a robot)."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise BagError(f"labels file {explicit} does not exist: check --labels")
        return Path(explicit)
    for candidate in labels_sidecar_candidates(bag):
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(p) for p in labels_sidecar_candidates(bag))
    raise BagError(f"no labels sidecar for bag {bag} (looked for {tried}): pass --labels FILE "
                   f"(columns {', '.join(LABEL_FIELDS[:4])}, {' '.join(CLASS_CODES)}) "
                   "or --no-labels for probabilities only")


@dataclass(frozen=True)
class LabelRow:
    """One exam's ground truth, joinable to results by exam id or by eye stamps."""

    patient_id: str
    exam_id: str
    left_stamp_ns: int
    right_stamp_ns: int
    labels: np.ndarray  # [8] float32, CLASS_CODES order
    left_file: str = ""
    right_file: str = ""
    #: each eye's diagnostic keywords (ODIR sheet): the per-eye labels' source; optional columns
    left_keywords: str = ""
    right_keywords: str = ""


def write_labels_sidecar(path: Path, rows: Iterable[LabelRow]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABEL_FIELDS)
        for row in rows:
            writer.writerow([row.patient_id, row.exam_id, row.left_stamp_ns, row.right_stamp_ns, row.left_file,
                             row.right_file, *(int(v) for v in row.labels), row.left_keywords, row.right_keywords])


def read_labels_sidecar(path: Path) -> list[LabelRow]:
    """Read a sidecar; exam_id or both stamps may be empty (then that join key is unused)."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        missing = [c for c in ("patient_id", *CLASS_CODES) if c not in columns]
        if missing or not ({"exam_id"} <= columns or {"left_stamp_ns", "right_stamp_ns"} <= columns):
            need = missing or ["exam_id or left_stamp_ns+right_stamp_ns"]
            raise BagError(f"labels file {path} lacks columns {need}: it needs {', '.join(LABEL_FIELDS)}")
        rows = []
        for i, rec in enumerate(reader, start=2):
            try:
                rows.append(LabelRow(
                    patient_id=str(rec["patient_id"]).strip(),
                    exam_id=str(rec.get("exam_id") or "").strip(),
                    left_stamp_ns=int(rec.get("left_stamp_ns") or 0),
                    right_stamp_ns=int(rec.get("right_stamp_ns") or 0),
                    labels=np.asarray([float(rec[c]) for c in CLASS_CODES], dtype=np.float32),
                    left_file=str(rec.get("left_file") or ""),
                    right_file=str(rec.get("right_file") or ""),
                    left_keywords=str(rec.get("left_keywords") or ""),
                    right_keywords=str(rec.get("right_keywords") or ""),
                ))
            except (TypeError, ValueError) as err:
                raise BagError(f"labels file {path} line {i} is malformed ({one_line(err, limit=199)}): "
                               "fix or regenerate it with `dms-net-bag make`") from err
    return rows
