"""End-to-end latency, accounting and memory soak of the diagnosis node on CPU.

Starts the node (a subprocess, like on the robot) on ``--bundle``, publishes real eye
pairs (``--width`` x ``--height`` rgb8, a demo photograph scaled into a camera frame) at
``--rate`` Hz for ``--duration`` seconds and measures, per pair, second image published ->
DiagnosisResult received (same machine clock). With ``--burst-every S`` it also publishes,
every S seconds, ``--burst-pairs`` pairs of each ``--burst-sizes`` frame size back to back
(the black-box test of issue 16 grew the node's RSS from 453 to 811 MB with bursts of
2048x1536 and 4096x4096 pairs). The node's RSS is sampled every second; the table gives it
after warm-up, at its peak, at the end, the growth from the first to the last tenth of the
run, and a timeline (``--timeline-every`` seconds). Drops and transport losses come from
/diagnostics at the end; every published pair must be a result or a counted drop.

    source scripts/env.sh
    python benchmarks/soak.py --bundle models/demo --duration 600 --rate 1 \\
        --burst-every 60 --burst-pairs 2 --burst-sizes 2048x1536,4096x4096
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
    p.add_argument("--burst-every", type=float, default=0.0, help="seconds between bursts (0: no bursts)")
    p.add_argument("--burst-pairs", type=int, default=2, help="pairs per frame size in a burst")
    p.add_argument("--burst-sizes", default="2048x1536,4096x4096", help="comma-separated WxH frame sizes of a burst")
    p.add_argument("--timeline-every", type=float, default=60.0, help="seconds between RSS timeline rows")
    p.add_argument("--node-param", action="append", default=[], help="extra node parameter name:=value (repeatable)")
    return p


def camera_pair(width: int, height: int) -> dict:
    """Left/right rgb8 messages: the demo photographs in a black camera frame of that size."""
    from benchmarks.node_overhead import clinical_frame
    from dms_net_ros.image_codec import rgb_to_image_msg

    disc = min(height, width) * 97 // 100
    return {e: rgb_to_image_msg(clinical_frame(e, width, height, disc), "rgb8") for e in ("left", "right")}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randrange(1, 100)))
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dms_net_ros.msg import DiagnosisResult

    ns = f"/soak{os.getpid()}"
    cmd = [sys.executable, "-m", "dms_net_ros.node", "--ros-args",
           "--params-file", str(REPO / "config" / "diagnose.yaml"),
           "-r", f"__ns:={ns}", "-p", f"bundle:={args.bundle}", "-p", f"backend:={args.backend}", "-p", "qos:=reliable",
           "-p", "qos_depth:=10", "-p", "diagnostics_period_s:=0.5"]
    for extra in args.node_param:
        cmd += ["-p", extra]
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
            latencies.append((time.monotonic() - sent.pop(key)) * 1e3)
        statuses[msg.status] = statuses.get(msg.status, 0) + 1

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith(ns + "/"):
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(DiagnosisResult, "diagnosis", on_result,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    steady = camera_pair(args.width, args.height)
    bursts = ([camera_pair(*map(int, size.split("x"))) for size in args.burst_sizes.split(",")]
              if args.burst_every > 0 else [])
    # (t, rss, shared: file-backed and shared-memory pages, e.g. DDS segments)
    rss: list[tuple[float, float, float]] = []
    proc = psutil.Process(node_proc.pid)
    n = 0

    def publish_pair(msgs: dict) -> None:
        nonlocal n
        stamp = node.get_clock().now()
        msgs["left"].header.stamp = stamp.to_msg()
        right_stamp = stamp.nanoseconds + 1_000_000  # 1 ms later: a distinct stamp per eye
        msgs["right"].header.stamp.sec, msgs["right"].header.stamp.nanosec = divmod(right_stamp, 10**9)
        pubs["left"].publish(msgs["left"])
        pubs["right"].publish(msgs["right"])
        sent[right_stamp] = time.monotonic()
        n += 1

    def spin_until(deadline: float, start: float) -> None:
        while time.monotonic() < deadline:
            if not rss or time.monotonic() - start - rss[-1][0] >= 1.0:
                mem = proc.memory_info()
                rss.append((time.monotonic() - start, mem.rss / 2**20, mem.shared / 2**20))
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.05, deadline - time.monotonic())))

    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs.values()):
            rclpy.spin_once(node, timeout_sec=0.1)
        for _ in range(10):
            rclpy.spin_once(node, timeout_sec=0.05)
        start = time.monotonic()
        next_burst = start + args.burst_every if bursts else float("inf")
        steady_count = 0
        while time.monotonic() - start < args.duration:
            if time.monotonic() >= next_burst:
                for msgs in bursts:
                    for _ in range(args.burst_pairs):
                        publish_pair(msgs)
                        spin_until(time.monotonic() + 0.05, start)
                next_burst += args.burst_every
            publish_pair(steady)
            steady_count += 1
            spin_until(start + steady_count / args.rate, start)
        settle = time.monotonic() + 60
        while time.monotonic() < settle and sum(statuses.values()) + int(diag.get("drops_queue_overflow", 0)) < n:
            spin_until(time.monotonic() + 0.2, start)
        spin_until(time.monotonic() + 2.0, start)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
    lat = np.asarray(latencies)
    values = np.array([r for _, r, _ in rss]) if rss else np.array([np.nan])
    window = max(1, len(rss) // 10)
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    burst_text = (f"; bursts every {args.burst_every:.0f} s of {args.burst_pairs} pairs at {args.burst_sizes}"
                  if bursts else "")
    print(f"soak: {args.duration:.0f} s at {args.rate} pairs/s of {args.width}x{args.height} rgb8{burst_text}; "
          f"bundle {args.bundle} ({args.backend}), {os.cpu_count()} CPUs")
    print("| metric | value |\n|---|---|")
    print(f"| pairs published | {n} |")
    print(f"| results (ok/ungradable/error) | {statuses.get(0, 0)}/{statuses.get(1, 0)}/{statuses.get(2, 0)} |")
    print(f"| drops counted by the node | {diag.get('drops_total', '?')} "
          f"(queue_overflow {diag.get('drops_queue_overflow', 0)}) |")
    print(f"| transport losses counted (left/right) | {diag.get('transport_lost_left', '?')}/"
          f"{diag.get('transport_lost_right', '?')} |")
    print(f"| unaccounted pairs | {n - sum(statuses.values()) - int(diag.get('drops_queue_overflow', 0))} |")
    if lat.size:
        print(f"| end-to-end latency p50 / p95 / max ms | {np.percentile(lat, 50):.1f} / "
              f"{np.percentile(lat, 95):.1f} / {lat.max():.1f} |")
    print(f"| node RSS first 10% -> last 10% (MiB) | {first:.1f} -> {last:.1f} "
          f"({(last - first) / first * 100:+.1f}%) |")
    print(f"| node RSS peak (MiB) | {values.max():.1f} |")
    print("\n| t (s) | node RSS (MiB) | of which shared (DDS segments, libraries) |\n|---:|---:|---:|")
    step = max(1.0, args.timeline_every)
    mark = 0.0
    for t, r, shared in rss:
        if t >= mark:
            print(f"| {t:.0f} | {r:.1f} | {shared:.1f} |")
            mark += step
    if rss:
        print(f"| {rss[-1][0]:.0f} | {rss[-1][1]:.1f} | {rss[-1][2]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
