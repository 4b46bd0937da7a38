"""End-to-end latency and soak of the diagnosis node on CPU.

Starts the node (a subprocess, like on the robot) on ``--bundle``, publishes real eye
pairs (``--width`` x ``--height`` rgb8) at ``--rate`` Hz for ``--duration`` seconds and
measures, per pair, second image published -> DiagnosisResult received (same machine
clock); samples the node's RSS (first vs last minute -> growth %) and reads the drop
counters from /diagnostics at the end. Prints a table.

    source scripts/env.sh
    python benchmarks/soak.py --bundle models/demo --duration 600 --rate 2
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="models/demo")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--duration", type=float, default=600.0, help="soak seconds (default 10 min)")
    p.add_argument("--rate", type=float, default=2.0, help="pairs per second (keep it sustainable)")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--height", type=int, default=1536)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randrange(1, 100)))
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from benchmarks.node_overhead import clinical_frame
    from dms_net_ros.image_codec import rgb_to_image_msg
    from dms_net_ros.msg import DiagnosisResult

    ns = f"/soak{os.getpid()}"
    cmd = [sys.executable, "-m", "dms_net_ros.node", "--ros-args", "--params-file", str(REPO / "config" / "diagnose.yaml"),
           "-r", f"__ns:={ns}", "-p", f"bundle:={args.bundle}", "-p", f"backend:={args.backend}", "-p", "qos:=reliable", "-p", "diagnostics_period_s:=0.5"]
    node_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    rclpy.init()
    node = rclpy.create_node("dms_soak", namespace=ns)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {e: node.create_publisher(Image, f"{e}/image_raw", qos) for e in ("left", "right")}
    sent: dict[int, float] = {}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    diag: dict[str, str] = {}

    def on_result(msg):
        key = msg.right_stamp.sec * 10**9 + msg.right_stamp.nanosec
        if key in sent:
            latencies.append((time.monotonic() - sent[key]) * 1e3)
        statuses[msg.status] = statuses.get(msg.status, 0) + 1

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith(ns + "/"):
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(DiagnosisResult, "diagnosis", on_result, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    msgs = {e: rgb_to_image_msg(clinical_frame(e, args.width, args.height), "rgb8") for e in ("left", "right")}
    rss: list[tuple[float, float]] = []
    proc = psutil.Process(node_proc.pid)
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs.values()):
            rclpy.spin_once(node, timeout_sec=0.1)
        for _ in range(10):
            rclpy.spin_once(node, timeout_sec=0.05)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < args.duration:
            stamp = node.get_clock().now()
            for e in ("left", "right"):
                msgs[e].header.stamp = stamp.to_msg()
                pubs[e].publish(msgs[e])
            sent[stamp.nanoseconds] = time.monotonic()
            n += 1
            rss.append((time.monotonic() - start, proc.memory_info().rss / 2**20))
            next_t = start + n / args.rate
            while time.monotonic() < next_t:
                rclpy.spin_once(node, timeout_sec=max(0.0, min(0.05, next_t - time.monotonic())))
        end = time.monotonic() + 10
        while time.monotonic() < end and sum(statuses.values()) + int(diag.get("drops_total", 0)) < n:
            rclpy.spin_once(node, timeout_sec=0.1)
        for _ in range(20):
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
    lat = np.asarray(latencies)
    window = max(1, len(rss) // 10)
    first = float(np.mean([r for _, r in rss[:window]])) if rss else float("nan")
    last = float(np.mean([r for _, r in rss[-window:]])) if rss else float("nan")
    print(f"soak: {args.duration:.0f} s at {args.rate} pairs/s, {args.width}x{args.height} rgb8, bundle {args.bundle} ({args.backend}), {os.cpu_count()} CPUs")
    print("| metric | value |\n|---|---|")
    print(f"| pairs published | {n} |")
    print(f"| results (ok/ungradable/error) | {statuses.get(0, 0)}/{statuses.get(1, 0)}/{statuses.get(2, 0)} |")
    print(f"| drops counted by the node | {diag.get('drops_total', '?')} (queue_overflow {diag.get('drops_queue_overflow', 0)}) |")
    print(f"| unaccounted pairs | {n - sum(statuses.values()) - int(diag.get('drops_queue_overflow', 0))} |")
    if lat.size:
        print(f"| end-to-end latency p50 / p95 / max ms | {np.percentile(lat, 50):.1f} / {np.percentile(lat, 95):.1f} / {lat.max():.1f} |")
    print(f"| node RSS first 10% -> last 10% (MiB) | {first:.1f} -> {last:.1f} ({(last - first) / first * 100:+.1f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
