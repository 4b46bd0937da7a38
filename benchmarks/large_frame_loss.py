"""Where does a large best-effort frame go? One publisher, one node-like subscriber (issue 25).

The publisher process sends, from one publisher and ``--rounds`` times: a small frame (a
marker), then one large frame (``--large``, e.g. 4096x4096 rgb8), then a small frame again.
Each step waits (generous deadlines, no fixed sleeps) until the subscriber reports the
delivery or a timeout. The subscriber subscribes like the node (``qos`` best effort or
reliable, keep last ``--depth``, message_info, `SequenceGapCounter`, a message-lost
handler) and reports every delivery's publication sequence number, so the output tells
whether the large sample consumed a sequence number (a gap at the next small frame), whether
Fast DDS raised message-lost, and whether the large sample arrived at all.

    source scripts/env.sh
    python benchmarks/large_frame_loss.py --large 4096x4096:rgb8 --qos sensor_data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "mono16": 2, "rgb16": 6, "rgba16": 8}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--large", default="4096x4096:rgb8", help="WxH:encoding of the large frame")
    p.add_argument("--small", default="64x64:rgb8")
    p.add_argument("--qos", default="sensor_data", choices=("sensor_data", "reliable"), help="both sides")
    p.add_argument("--pub-qos", default="", help="publisher QoS if different (sensor_data or reliable)")
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the large frame")
    p.add_argument("--role", default="pub", choices=("pub", "sub"), help=argparse.SUPPRESS)
    p.add_argument("--topic", default="", help=argparse.SUPPRESS)
    return p


def _qos(kind: str, depth: int):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.BEST_EFFORT if kind == "sensor_data" else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def subscriber(args: argparse.Namespace) -> int:
    """One JSON line per delivery / lost event on stdout until stdin closes."""
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from sensor_msgs.msg import Image

    from dms_net_ros.transport_loss import SequenceGapCounter, publisher_key

    rclpy.init()
    node = rclpy.create_node(f"large_frame_sub_{os.getpid()}")
    gaps = SequenceGapCounter()

    def on_image(msg, info):
        pub, seq = publisher_key(info)
        missed = gaps.observe(pub, seq)
        print(json.dumps({"event": "image", "size": f"{msg.width}x{msg.height}:{msg.encoding}", "bytes": len(msg.data),
                          "seq": seq, "gap": missed, "gaps_total": gaps.lost}), flush=True)

    def on_lost(info):
        print(json.dumps({"event": "lost", "change": info.total_count_change, "total": info.total_count}), flush=True)

    node.create_subscription(Image, args.topic, on_image, _qos(args.qos, args.depth),
                             event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        rclpy.spin_once(node, timeout_sec=0.05)
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
            break
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _frame(spec: str, rng: np.random.Generator):
    from sensor_msgs.msg import Image

    size, enc = spec.split(":")
    w, h = map(int, size.split("x"))
    step = w * BYTES_PER_PIXEL[enc]
    msg = Image(height=h, width=w, encoding=enc, step=step)
    msg.data = rng.integers(0, 256, h * step, dtype=np.uint8).tobytes()
    return msg


def publisher(args: argparse.Namespace) -> int:
    import rclpy

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randrange(1, 100)))
    topic = f"large_frame_{os.getpid()}"
    sub = subprocess.Popen([sys.executable, __file__, "--role", "sub", "--qos", args.qos, "--topic", topic,
                            "--depth", str(args.depth)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    events: list[dict] = []

    def read_events(timeout: float, until) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([sub.stdout], [], [], 0.05)[0]:
                line = sub.stdout.readline()
                if not line:
                    return False
                events.append(json.loads(line))
                if until(events[-1]):
                    return True
        return False

    assert read_events(60, lambda e: e["event"] == "ready"), "subscriber did not start"
    rclpy.init()
    node = rclpy.create_node(f"large_frame_pub_{os.getpid()}")
    pub_kind = args.pub_qos or args.qos
    pub = node.create_publisher(__import__("sensor_msgs.msg", fromlist=["Image"]).Image, topic,
                                _qos(pub_kind, args.depth))
    end = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    rng = np.random.default_rng(0)
    small, large = _frame(args.small, rng), _frame(args.large, rng)
    published = 0
    print(f"large frame {args.large} ({len(large.data) / 1e6:.1f} MB), qos sub {args.qos} pub {pub_kind}, "
          f"depth {args.depth}, "
          f"profile {os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '(none)')}", flush=True)
    rows = []

    def send(msg, label: str, timeout: float) -> dict:
        nonlocal published
        t0 = time.monotonic()
        pub.publish(msg)
        published += 1
        publish_s = time.monotonic() - t0
        mark = len(events)
        got = read_events(timeout, lambda e: e["event"] == "image" and e["bytes"] == len(msg.data))
        new = events[mark:]
        img = next((e for e in new if e["event"] == "image" and e["bytes"] == len(msg.data)), None)
        row = {"frame": label, "published": published, "publish_s": round(publish_s, 3), "arrived": got,
               "seq": img["seq"] if img else None, "gap": img["gap"] if img else None,
               "lost_events": sum(e["change"] for e in new if e["event"] == "lost")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    for _ in range(args.rounds):
        send(small, "small", 30)
        send(large, "large", args.wait)
        send(small, "small", 30)
    read_events(2.0, lambda e: False)  # late events
    late_lost = sum(e["change"] for e in events if e["event"] == "lost")
    sub.stdin.close()
    sub.wait(20)
    delivered = sum(1 for e in events if e["event"] == "image")
    gaps_total = max((e["gaps_total"] for e in events if e["event"] == "image"), default=0)
    large_arrived = sum(1 for r in rows if r["frame"] == "large" and r["arrived"])
    print(json.dumps({"summary": True, "published": published, "delivered": delivered, "large_sent": args.rounds,
                      "large_arrived": large_arrived, "sequence_gaps": gaps_total, "dds_lost_events": late_lost}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return subscriber(args) if args.role == "sub" else publisher(args)


if __name__ == "__main__":
    sys.exit(main())
