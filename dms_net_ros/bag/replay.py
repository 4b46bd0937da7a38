"""`dms-net-bag replay`: publish a bag to a RUNNING diagnosis node, record what it says.

The live half of QA's "live == offline" check:

1. DDS stays on this machine: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a
   ``ROS_DOMAIN_ID`` (the caller's, else a random one for this run, also handed to a node
   started with ``--start-node``); the Fast DDS large-image profile from ``config/`` when
   none is set.
2. The bag's messages are published as their raw CDR bytes (``publisher.publish(bytes)``,
   no decode/re-encode) on the recorded topic names (or ``--remap``), at the recorded rate,
   ``--rate X`` times faster, or ``--as-fast-as-possible`` with backpressure: at most
   ``--max-in-flight`` pairs wait for their result, so the node's drop-oldest queue never
   overflows and every pair gets a result.
3. ``diagnosis`` (DiagnosisResult) and ``/diagnostics`` are recorded with raw
   subscriptions into an output bag (rosbags writer; the DiagnosisResult type is
   registered from ``msg/DiagnosisResult.msg``, whose hash equals rosidl's).
4. The recorded results get the same report as `evaluate` (labels sidecar, ODIR metrics)
   and are compared pair by pair, by stamps, with `evaluate` run on the same bag and bundle
   (or an earlier ``evaluate`` output via ``--offline``): max |probability difference| and
   every missing pair explained by the node's ERROR results or its drop counters.

rclpy is imported only inside `run`, so the offline subcommands never need ROS.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dms_net_ros.bag import io
from dms_net_ros.bag.arguments import (
    add_backend_arguments,
    add_pipeline_arguments,
    add_topic_arguments,
    load_bundle_and_backend,
    settings_from_args,
)
from dms_net_ros.bag.compare import DIAGNOSTICS_TOPIC, Comparison, compare, read_live_recording
from dms_net_ros.bag.evaluate import BagEvaluation, evaluate_bag, format_summary, join_labels, write_outputs
from dms_net_ros.bag.pair_results import read_pairs_csv
from dms_net_ros.package_files import IMPORT_ROOT, package_file
from dms_net_ros.stamps import stamp_to_ns

FASTDDS_PROFILE = "config/fastdds_large_images.xml"


# --------------------------------------------------------------------------- environment


def ros_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Keep DDS on this machine; choose this run's domain unless the caller chose one."""
    env = os.environ if env is None else env
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(random.randint(1, 101))
    profile = package_file(FASTDDS_PROFILE)
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE") and profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return {k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")
            if k in env}


def import_msg_class(msgtype: str) -> type:
    """``pkg/msg/Name`` -> the rclpy message class (the generated Python package)."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as err:
        if pkg == "dms_net_ros":
            raise io.BagError("the DiagnosisResult message package is not built or not on the path: "
                              "run `bash scripts/setup.sh` then `source scripts/env.sh`") from err
        raise io.BagError(f"message type {msgtype} is not importable in this ROS environment ({err}): "
                          "install its package") from err


# --------------------------------------------------------------------------- the node subprocess


def start_node(bundle: Path, *, compressed: bool, log_path: Path, params: list[str], backend: str = "auto",
               device: str = "auto") -> subprocess.Popen:
    """Launch ``dms_net_diagnosis`` (autostart) as a child process logging to ``log_path``.

    Input QoS is ``reliable`` unless overridden with ``--node-param qos:=sensor_data``: a
    replay should not lose images in transport, so any missing pair is the node's doing.
    """
    cmd = [sys.executable, "-m", "dms_net_ros.node", "--ros-args",
           "-p", f"bundle:={Path(bundle).resolve()}", "-p", f"image_transport:={'compressed' if compressed else 'raw'}",
           "-p", "qos:=reliable", "-p", "qos_depth:=10", "-p", f"backend:={backend}", "-p", f"device:={device}",
           "-p", "autostart:=true"]
    for p in params:
        cmd += ["-p", p]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(IMPORT_ROOT), env.get("PYTHONPATH", "")) if x)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------- replay


@dataclass
class ReplayStats:
    published: dict[str, int] = field(default_factory=dict)
    pairs_sent: int = 0
    backpressure_waits: int = 0
    backpressure_timeouts: int = 0
    wall_s: float = 0.0


class _Recorder:
    """Raw subscriptions -> memory (thread-safe); written to the output bag at the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, str, int, bytes]] = []
        self.pair_results = 0
        self.results = 0
        self.diagnostics_after_last_result = False
        self.last_result_time = time.monotonic()

    def on_result(self, topic: str, raw: bytes) -> None:
        # Both stamps set <=> a result for a pair (unpaired-eye ERRORs carry one stamp).
        msg = io.deserialize(raw, io.DIAGNOSIS_RESULT_TYPE)
        is_pair = stamp_to_ns(msg.left_stamp) > 0 and stamp_to_ns(msg.right_stamp) > 0
        with self.lock:
            self.messages.append((topic, io.DIAGNOSIS_RESULT_TYPE, time.time_ns(), bytes(raw)))
            self.results += 1
            self.pair_results += int(is_pair)
            self.diagnostics_after_last_result = False
            self.last_result_time = time.monotonic()

    def on_diagnostics(self, topic: str, raw: bytes) -> None:
        with self.lock:
            self.messages.append((topic, io.DIAGNOSTIC_ARRAY_TYPE, time.time_ns(), bytes(raw)))
            self.diagnostics_after_last_result = True


def _wait(predicate, timeout: float, poll: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def replay_bag(args: Any, out_dir: Path, expected_results: int | None, node_proc: subprocess.Popen | None,
               node_log: Path | None) -> tuple[ReplayStats, Path]:
    """Publish the bag, record results into ``out_dir/results`` (rosbag2); returns stats and bag path."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from dms_net_ros.pairing import ApproximateTimePairer

    result_cls = import_msg_class(io.DIAGNOSIS_RESULT_TYPE)
    diag_cls = import_msg_class(io.DIAGNOSTIC_ARRAY_TYPE)
    remaps = dict(r.split(":=", 1) for r in args.remap)
    settings = settings_from_args(args)
    stats = ReplayStats()
    recorder = _Recorder()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = executor = spin_thread = None
    try:
        node = rclpy.create_node("dms_net_bag_replay", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        with io.BagReader(args.bag) as reader:
            left = reader.find_image_topic(args.left_topic, "--left-topic")
            right = reader.find_image_topic(args.right_topic, "--right-topic")
            exam = reader.find_topic(args.exam_topic, (io.STRING_TYPE,), required=False) if args.exam_topic else None
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            pubs: dict[int, Any] = {}
            eye_of: dict[int, str] = {}
            for match, qos, eye in ((left, reliable, "left"), (right, reliable, "right"), (exam, latched, "")):
                if match is None:
                    continue
                publisher = node.create_publisher(import_msg_class(match.msgtype),
                                                  remaps.get(match.topic, match.topic), qos)
                for conn in match.connections:
                    pubs[conn.id] = publisher
                    eye_of[conn.id] = eye
            image_pubs = {eye: pubs[m.connections[0].id] for eye, m in (("left", left), ("right", right))}
            result_sub = node.create_subscription(
                result_cls, args.result_topic, lambda raw: recorder.on_result(result_sub.topic_name, raw),
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
            node.create_subscription(
                diag_cls, DIAGNOSTICS_TOPIC, lambda raw: recorder.on_diagnostics(DIAGNOSTICS_TOPIC, raw),
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
            spin_thread = threading.Thread(target=executor.spin, name="dms-net-bag-replay-spin", daemon=True)
            spin_thread.start()

            _wait_for_node(node, image_pubs, result_sub, args, node_proc, node_log)

            pairer = ApproximateTimePairer.from_settings(settings.pairing)
            bar = None
            if not args.quiet:
                from tqdm import tqdm

                bar = tqdm(total=sum(m.count for m in (left, right, exam) if m), desc=f"replay {Path(args.bag).name}",
                           unit="msg", leave=False)
            t_start = time.monotonic()
            first_log_ns = None
            for conn, log_ns, raw in reader.messages([left, right, exam]):
                first_log_ns = log_ns if first_log_ns is None else first_log_ns
                if not args.as_fast_as_possible:
                    due = t_start + (log_ns - first_log_ns) / 1e9 / args.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                eye = eye_of[conn.id]
                if args.as_fast_as_possible:
                    _backpressure(recorder, stats, args)
                    if not eye:
                        # The node copies the exam id when a pair forms: let the previous
                        # pair's callbacks run before the next exam id can overtake them.
                        time.sleep(args.exam_lead)
                pubs[conn.id].publish(bytes(raw))
                stats.published[conn.topic] = stats.published.get(conn.topic, 0) + 1
                if not eye:
                    if args.as_fast_as_possible:
                        time.sleep(args.exam_lead)  # let the latched exam id land before the images
                else:
                    stamp = stamp_to_ns(io.deserialize(raw, conn.msgtype).header.stamp)
                    pairer.expire(time.monotonic())
                    stats.pairs_sent += len(pairer.add(eye, stamp, None, received=time.monotonic()).pairs)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            stats.wall_s = time.monotonic() - t_start
        _drain(recorder, expected_results, args, node_proc)
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    results_bag = out_dir / "results"
    with io.BagWriter(results_bag, "mcap") as writer:
        writer.set_custom_data("dms_net_bag", json.dumps({"tool": "dms-net-bag replay", "source": str(args.bag)}))
        with recorder.lock:
            for topic, msgtype, t_ns, raw in sorted(recorder.messages, key=lambda m: m[2]):
                writer.write_raw(topic, msgtype, t_ns, raw, io.RELIABLE_QOS)  # the node publishes results reliable
    return stats, results_bag


def _wait_for_node(node: Any, image_pubs: dict[str, Any], result_sub: Any, args: Any,
                   node_proc: subprocess.Popen | None, node_log: Path | None) -> None:
    """Block until the node subscribes to both eyes and publishes results, or fail in one line."""
    def ready() -> bool:
        if node_proc is not None and node_proc.poll() is not None:
            return True
        return all(p.get_subscription_count() > 0 for p in image_pubs.values()) and result_sub.get_publisher_count() > 0

    ok = _wait(ready, args.wait_for_node, poll=0.05)
    if node_proc is not None and node_proc.poll() is not None:
        raise io.BagError(f"the started node exited with code {node_proc.returncode} "
                          f"({_tail(node_log) if node_log else ''}): "
                          f"see {node_log}")
    if not ok:
        missing = [p.topic_name for p in image_pubs.values() if p.get_subscription_count() == 0]
        if result_sub.get_publisher_count() == 0:
            missing.append(f"publisher of {result_sub.topic_name}")
        raise io.BagError(
            f"no diagnosis node found after {args.wait_for_node:g} s (nothing on {', '.join(missing)}; ROS_DOMAIN_ID="
            f"{os.environ.get('ROS_DOMAIN_ID')}): start it active in the same domain "
            "with image_transport matching the bag, "
            f"remap topics with --remap, or pass --start-node")
    time.sleep(args.settle)  # discovery done on our side; give the node's side a moment too


def _backpressure(recorder: _Recorder, stats: ReplayStats, args: Any) -> None:
    def room() -> bool:
        with recorder.lock:
            return stats.pairs_sent - recorder.pair_results < args.max_in_flight

    if room():
        return
    stats.backpressure_waits += 1
    if not _wait(room, args.result_timeout, poll=0.002):
        stats.backpressure_timeouts += 1


def _drain(recorder: _Recorder, expected: int | None, args: Any, node_proc: subprocess.Popen | None) -> None:
    """Wait for the last results (and one /diagnostics after them): until ``expected``
    results arrived, else until none came for ``--idle-timeout`` seconds."""
    end = time.monotonic() + args.drain_timeout
    while time.monotonic() < end:
        if node_proc is not None and node_proc.poll() is not None:
            return
        with recorder.lock:
            done = expected is not None and recorder.results >= expected
            idle = time.monotonic() - recorder.last_result_time > args.idle_timeout
            diag = recorder.diagnostics_after_last_result
        if (done or idle) and diag:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory to publish")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="model bundle: runs `evaluate` for the comparison (and is what --start-node loads)")
    parser.add_argument("--offline", type=Path, default=None,
                        help="an earlier `dms-net-bag evaluate` output folder (pairs.csv) to compare with")
    parser.add_argument("--output", "-o", type=Path, default=None, help="output folder (default: <bag>_replay)")
    parser.add_argument("--start-node", action="store_true",
                        help="launch the diagnosis node with --bundle as a child process")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (with --start-node)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="publish at X times the recorded rate (default 1)")
    speed.add_argument("--as-fast-as-possible", action="store_true", help="no timing; wait for results (backpressure)")
    parser.add_argument("--max-in-flight", type=int, default=1,
                        help="pairs awaiting a result before publishing pauses (fast mode)")
    parser.add_argument("--exam-lead", type=float, default=0.05,
                        help="seconds between an exam id and its images (fast mode)")
    parser.add_argument("--result-topic", default="diagnosis", help="the node's output topic (default: diagnosis)")
    parser.add_argument("--remap", action="append", default=[], metavar="BAG_TOPIC:=TOPIC",
                        help="publish a bag topic under another name")
    parser.add_argument("--wait-for-node", type=float, default=30.0,
                        help="seconds to wait for the node's subscriptions")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after discovery before publishing")
    parser.add_argument("--result-timeout", type=float, default=30.0,
                        help="fast mode: max seconds to wait for one result")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="stop waiting when no result came for this long (default: pair timeout + 2 s)")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="max seconds to wait for the last results")
    add_topic_arguments(parser)
    add_pipeline_arguments(parser)
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="offline evaluation batch size")


def run(args) -> int:
    if args.rate <= 0:
        raise io.BagError("--rate must be > 0: use --as-fast-as-possible for no timing")
    if args.start_node and args.bundle is None:
        raise io.BagError("--start-node needs --bundle (the model the node loads)")
    if args.idle_timeout is None:
        args.idle_timeout = args.pair_timeout + 2.0
    env = ros_environment()
    out_dir = args.output or args.bag.with_name(args.bag.name + "_replay")
    if (out_dir / "results").exists():
        raise io.BagError(f"{out_dir / 'results'} already exists: remove it or choose another --output")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_from_args(args)

    # Offline first: it validates the bag and gives the number of results to wait for.
    offline: BagEvaluation | None = None
    offline_pairs = None
    offline_unpaired = 0
    bundle = None
    if args.bundle is not None:
        bundle, backend = load_bundle_and_backend(args)
        try:
            offline = evaluate_bag(args.bag, bundle, backend, left_topic=args.left_topic, right_topic=args.right_topic,
                                   exam_topic=args.exam_topic, labels=args.labels, use_labels=not args.no_labels,
                                   settings=settings, batch_size=args.batch_size, progress=not args.quiet)
        finally:
            backend.close()
        write_outputs(offline, out_dir / "offline", bundle.thresholds, name=f"{args.bag.name} (offline)",
                      extra={"model_id": bundle.model_id})
        offline_pairs = offline.pairs
        offline_unpaired = sum(1 for u in offline.unpaired if u["reason"] != "duplicate")
    elif args.offline is not None:
        offline_pairs = read_pairs_csv(args.offline / "pairs.csv")
        summary = json.loads((args.offline / "bag_summary.json").read_text())
        offline_unpaired = sum(v for k, v in summary.get("pairing_drops", {}).items() if k != "duplicate")
    expected = None if offline_pairs is None else len(offline_pairs) + offline_unpaired

    node_proc = node_log = None
    with io.BagReader(args.bag) as reader:
        compressed = reader.find_image_topic(args.left_topic, "--left-topic").msgtype == io.COMPRESSED_IMAGE_TYPE
    if args.start_node:
        node_log = out_dir / "node.log"
        # The node gets the settings the offline evaluation used; --node-param comes last and wins.
        node_proc = start_node(args.bundle, compressed=compressed, log_path=node_log,
                               params=settings.node_params() + args.node_param,
                               backend=args.backend, device=args.device)
    try:
        stats, results_bag = replay_bag(args, out_dir, expected, node_proc, node_log)
    finally:
        if node_proc is not None:
            stop_node(node_proc)

    live = read_live_recording(results_bag, args.result_topic)
    thresholds = bundle.thresholds if bundle is not None else None
    live_eval = BagEvaluation(bag=args.bag, storage="live", topics={"left": "", "right": "", "exam_id": ""},
                              pairs=[r for r in live.results if r.left_stamp_ns and r.right_stamp_ns],
                              received={}, drops={}, backend="node")
    if not args.no_labels:
        label_rows = io.read_labels_sidecar(io.find_labels_sidecar(args.bag, args.labels))
        live_eval.unlabeled, live_eval.unused_labels = join_labels(live_eval.pairs, label_rows,
                                                                   int(round(settings.pairing.slop_s * 1e9)))
    if thresholds is None:
        import numpy as np

        from dms_net_core.checkpoint import default_thresholds

        thresholds = np.asarray(default_thresholds(), np.float32)
    replay_info = {"ros": env, "published": stats.published, "pairs_sent": stats.pairs_sent,
                   "wall_s": round(stats.wall_s, 3),
                   "mode": "as-fast-as-possible" if args.as_fast_as_possible else f"rate x{args.rate:g}",
                   "backpressure_waits": stats.backpressure_waits, "backpressure_timeouts": stats.backpressure_timeouts,
                   "node_diagnostics": live.diagnostics, "results_bag": str(results_bag)}
    live_summary = write_outputs(live_eval, out_dir / "live", thresholds, name=f"{args.bag.name} (live)",
                                 extra={"replay": replay_info})
    print(f"replayed {args.bag} ({replay_info['mode']}, {stats.wall_s:.1f} s, domain {env.get('ROS_DOMAIN_ID')}): "
          f"published {stats.published}; {len(live.results)} results recorded in {results_bag}")
    official = (live_summary.get("report") or {}).get("official")
    if official:
        print("  live ODIR official: " + ", ".join(f"{k} {official[k]:.4f}" for k in ("kappa", "f1", "auc", "final")))
    if offline is not None:
        print(format_summary(json.loads((out_dir / "offline" / "bag_summary.json").read_text())))
    comparison: Comparison | None = None
    if offline_pairs is not None:
        comparison = compare(offline_pairs, live, offline_unpaired)
        (out_dir / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=2, default=str))
        print("  " + comparison.format())
    print(f"  wrote {out_dir}")
    if comparison is not None and comparison.unexplained > 0:
        return 1
    return 0
