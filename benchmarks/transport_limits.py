"""What arrives over DDS: image size x rate x QoS with the shipped Fast DDS profile.

A publisher process sends ``--count`` rgb8 images of each size at each rate (0 = unpaced
burst) to a subscriber process that subscribes like the node does (``qos: sensor_data``:
best effort, or ``qos: reliable``; keep last ``--depth``) and does nothing else in its
callback. The subscriber counts what arrived, the gaps in the publisher's sequence numbers
(what the node reports as ``transport_lost_<eye>``) and Fast DDS's message-lost events, and
the latency from publish to callback. Both processes use the environment's Fast DDS profile
(``source scripts/env.sh``: config/fastdds_large_images.xml). One eye only: a node receives
two such streams.

    source scripts/env.sh
    python benchmarks/transport_limits.py [--sizes 1024x1024,2048x1536,4096x3072,4096x4096] [--rates 1,2,5,10,0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1024x1024,2048x1536,4096x3072,4096x4096")
    p.add_argument("--rates", default="1,2,5,10,0", help="images per second; 0: an unpaced burst")
    p.add_argument("--qos", default="sensor_data,reliable")
    p.add_argument("--count", type=int, default=0, help="images per case (default: 5 s worth, at least 10)")
    p.add_argument("--depth", type=int, default=5, help="history depth of both sides (the node's qos_depth default)")
    p.add_argument("--role", default="bench", choices=("bench", "sub"), help=argparse.SUPPRESS)
    p.add_argument("--topic", default="", help=argparse.SUPPRESS)
    return p


def _qos(kind: str, depth: int):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.BEST_EFFORT if kind == "sensor_data" else ReliabilityPolicy.RELIABLE
    return QoSProfile(depth=depth, reliability=reliability)


def subscriber(args: argparse.Namespace, kind: str) -> int:
    """Count deliveries until stdin closes; print one JSON line."""
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from sensor_msgs.msg import Image

    from dms_net_ros.transport_loss import SequenceGapCounter, publisher_key

    rclpy.init()
    node = rclpy.create_node(f"transport_sub_{os.getpid()}")
    gaps = SequenceGapCounter()
    seen = {"received": 0, "dds_lost": 0, "latency_ms": []}

    def on_image(msg, info):
        seen["received"] += 1
        gaps.observe(*publisher_key(info))
        sent_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        seen["latency_ms"].append((time.time_ns() - sent_ns) / 1e6)

    def on_lost(info):
        seen["dds_lost"] += info.total_count_change

    node.create_subscription(Image, args.topic, on_image, _qos(kind, args.depth),
                             event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    print("ready", flush=True)
    import select

    while True:
        rclpy.spin_once(node, timeout_sec=0.05)
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
            break
    lat = np.asarray(seen["latency_ms"]) if seen["latency_ms"] else np.asarray([np.nan])
    print(json.dumps({"received": seen["received"], "gaps": gaps.lost, "dds_lost": seen["dds_lost"],
                      "p50_ms": float(np.nanpercentile(lat, 50)), "p95_ms": float(np.nanpercentile(lat, 95))}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_case(kind: str, width: int, height: int, rate: float, count: int, depth: int) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    topic = f"transport_bench_{os.getpid()}_{width}x{height}_{int(rate * 10)}_{kind}"
    sub = subprocess.Popen([sys.executable, __file__, "--role", "sub", "--qos", kind, "--topic", topic,
                            "--depth", str(depth)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert sub.stdout.readline().strip() == "ready"
    node = rclpy.create_node(f"transport_pub_{os.getpid()}")
    pub = node.create_publisher(Image, topic, _qos(kind, depth))
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    end = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)
    start = time.monotonic()
    for i in range(count):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        pub.publish(msg)
        if rate > 0:
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    time.sleep(3.0)  # let the last images land
    sub.stdin.close()
    result = json.loads(sub.stdout.readline())
    sub.wait(10)
    node.destroy_node()
    return result | {"sent": count}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randrange(1, 100)))
    if args.role == "sub":
        return subscriber(args, args.qos)
    import rclpy

    rclpy.init()
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "(none: Fast DDS defaults)")
    print(f"transport limits: Fast DDS profile {profile}, "
          f"RMW_FASTRTPS_USE_QOS_FROM_XML={os.environ.get('RMW_FASTRTPS_USE_QOS_FROM_XML', '')}, "
          f"keep last {args.depth}, {os.cpu_count()} CPUs")
    print("| qos | image | MB | rate Hz | sent | received | lost (seq. gaps) | Fast DDS lost events | p50 / p95 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for kind in args.qos.split(","):
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            for rate in map(float, args.rates.split(",")):
                count = args.count or (50 if rate == 0 else max(10, int(rate * 5)))
                r = run_case(kind, width, height, rate, count, args.depth)
                print(f"| {kind} | {size} | {width * height * 3 / 1e6:.1f} | {'burst' if rate == 0 else f'{rate:g}'} | "
                      f"{r['sent']} | {r['received']} | {r['gaps']} | {r['dds_lost']} | "
                      f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} |", flush=True)
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
