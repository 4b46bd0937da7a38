"""Test-side helpers for the ROS tests: the node as a real subprocess, and a client process
side (this pytest process) that publishes eye images and collects results/diagnostics."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "demo" / "samples"


def require_ros() -> None:
    """Skip the calling module when the colcon-built message package is missing."""
    try:
        import rclpy  # noqa: F401

        from dms_net_ros.msg import DiagnosisResult  # noqa: F401
    except ImportError as exc:
        pytest.skip(
            f"dms_net_ros.msg not importable ({exc}): run `bash scripts/setup.sh && source scripts/env.sh` first",
            allow_module_level=True,
        )


def sample_rgb(patient: str, eye: str) -> np.ndarray:
    from dms_net_core.data.preprocess import load_rgb

    return load_rgb(str(SAMPLES / "images" / f"{patient}_{eye}.jpg"))


def node_command(
    bundle: Path,
    namespace: str,
    params: dict[str, Any] | None = None,
    executable: list[str] | None = None,
    remaps: dict[str, str] | None = None,
    test_defaults: bool = True,
) -> list[str]:
    """``--params-file config/diagnose.yaml`` plus overrides; ``test_defaults`` adds reliable
    QoS with a deep history (tests must not lose a message to best effort)."""
    cmd = list(executable or [sys.executable, "-m", "dms_net_ros.node"])
    cmd += ["--ros-args", "--params-file", str(REPO / "config" / "diagnose.yaml"), "-r", f"__ns:={namespace}"]
    merged: dict[str, Any] = {"bundle": str(bundle), "backend": "onnxruntime", "device": "cpu"}
    if test_defaults:
        merged.update({"qos": "reliable", "qos_depth": 50, "warmup_iterations": 1})
    merged.update(params or {})
    for k, v in merged.items():
        v = str(v).lower() if isinstance(v, bool) else v
        cmd += ["-p", f"{k}:={v}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


class NodeProcess:
    """The diagnosis node in its own process; always `stop()` it (fixtures do, in finally)."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exit_code(self, timeout: float = 30.0) -> int:
        """For a node expected to exit by itself (a failed configure): its return code; stopped either way."""
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def configure_errors(self) -> list[str]:
        """The log's ``configure failed: ...`` lines (the node's rule: one line naming cause and fix)."""
        return [line for line in self.log_text().splitlines() if "configure failed: " in line]

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def isolate_module_domain(name: str, seed_offset: int, domains: range) -> str:
    """Keep DDS on this machine and give a module-scoped node its own ``ROS_DOMAIN_ID`` (drawn
    from ``domains``, seeded by pid so parallel checkouts differ); returns its namespace. The
    function-scoped ``ros_domain`` fixture cannot serve a node that outlives one test."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid() + seed_offset).randrange(domains.start, domains.stop))
    return f"/dmstest_{os.getpid()}_{name}"


@contextmanager
def served_node(bundle: Path, namespace: str, params: dict[str, Any],
                log_path: Path) -> Iterator[tuple["Client", NodeProcess]]:
    """(client, node): the node in its own process with ``params``, a client whose publishers it
    has matched; both torn down on exit, whatever the test did."""
    node = NodeProcess(node_command(bundle, namespace, params), log_path)
    client = None
    try:
        client = Client(namespace)
        client.wait_for_node(node)
        yield client, node
    finally:
        if client is not None:
            client.close()
        node.stop()


class Client:
    """Publishes eye images into ``namespace`` and records DiagnosisResult and /diagnostics."""

    def __init__(self, namespace: str, *, compressed: bool = False, depth: int = 100) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from dms_net_ros.msg import DiagnosisResult

        self.namespace = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node("dms_test_client", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        kind, suffix = (CompressedImage, "/image_raw/compressed") if compressed else (Image, "/image_raw")
        self.pubs = {eye: self.node.create_publisher(kind, eye + suffix, qos) for eye in ("left", "right")}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.exam_pub = self.node.create_publisher(String, "exam_id", latched)
        self.results: list[Any] = []
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(DiagnosisResult, "diagnosis", self.results.append,
                                      QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(self.namespace + "/"):
                self.diagnostics.append({kv.key: kv.value for kv in status.values} | {
                    "_level": (int.from_bytes(status.level, "little") if isinstance(status.level, bytes)
                               else int(status.level))})

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def wait_for_node(self, node: NodeProcess | None = None, timeout: float = 90.0) -> None:
        """Subscriptions on both eyes and a publisher on `diagnosis` matched, then settle. The
        deadline is generous (it returns as soon as they match): on a 2-core machine with other
        work running, a node took 16 s to configure and more to subscribe (issue 25 item 2)."""
        def ready() -> bool:
            if node is not None and node.proc.poll() is not None:
                raise AssertionError(f"node exited with {node.proc.returncode}:\n{node.log_text()[-3000:]}")
            return (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                    and self.node.count_publishers(self.namespace + "/diagnosis") > 0)

        if not self.spin_until(ready, timeout):
            raise AssertionError("node never subscribed" + (f":\n{node.log_text()[-3000:]}" if node else ""))
        self.spin_for(0.5)

    def publish(self, eye: str, msg: Any, stamp_ns: int) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000
        self.pubs[eye].publish(msg)

    def publish_exam_id(self, exam_id: str, timeout: float = 15.0) -> None:
        """Publish on the latched exam_id topic, retrying while Fast DDS refuses the write: a
        reliable depth-1 writer whose last sample the node has not acknowledged yet returns
        "cannot publish data" on a busy machine (seen in a full-suite run under load)."""
        from rclpy._rclpy_pybind11 import RCLError  # what a refused publish raises
        from std_msgs.msg import String

        end = time.monotonic() + timeout
        while True:
            try:
                self.exam_pub.publish(String(data=exam_id))
                return
            except RCLError:
                if time.monotonic() > end:
                    raise
                self.spin_for(0.1)

    def publish_pair(self, left: Any, right: Any, stamp_ns: int, right_offset_ns: int = 10_000_000) -> None:
        self.publish("left", left, stamp_ns)
        self.publish("right", right, stamp_ns + right_offset_ns)

    def wait_results(self, n: int, timeout: float = 15.0) -> list[Any]:
        self.spin_until(lambda: len(self.results) >= n, timeout)
        return self.results

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def offline_probabilities(bundle_dir: Path, left_rgb: np.ndarray, right_rgb: np.ndarray) -> np.ndarray:
    """The same images through the bundle offline (create_backend + preprocess_eye): the test
    oracle. It deliberately does NOT go through `ExamPipeline` (the node's own sequence), so a
    fault in the pipeline's preparation or batching shows as a difference instead of being
    reproduced on both sides; the quality gate is not part of the comparison."""
    from dms_net_core.bundle import ModelBundle
    from dms_net_core.data.preprocess import preprocess_eye
    from dms_net_core.runtime import create_backend

    bundle = ModelBundle.load(bundle_dir)
    backend = create_backend(bundle, backend="onnxruntime", device="cpu")
    try:
        left = preprocess_eye(left_rgb, bundle.preprocess)[None]
        right = preprocess_eye(right_rgb, bundle.preprocess)[None]
        return backend.infer(left, right).probabilities[0]
    finally:
        backend.close()
