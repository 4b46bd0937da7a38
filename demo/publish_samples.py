"""Publish the demo's real eye pairs to a running diagnosis node and print each result.

Plays the fundus camera: for each patient of ``<samples>/labels.csv`` it sets the exam id
(latched ``exam_id`` topic), publishes the left and right photographs as rgb8
``sensor_msgs/Image`` with one stamp, waits for the ``DiagnosisResult`` and prints it as a
table next to the patient's ground-truth labels. Needs no ros2 CLI (plain rclpy).

    python demo/publish_samples.py --namespace /demo
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

from dms_net_core.classes import CLASS_CODES

STATUS = {0: "OK", 1: "UNGRADABLE", 2: "ERROR"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default=str(Path(__file__).resolve().parent / "samples"),
                        help="folder with labels.csv and images/")
    parser.add_argument("--namespace", default="", help="namespace of the node (its topics are relative)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node, and for each result")
    parser.add_argument("--limit", type=int, default=0, help="publish only the first N patients (0 = all)")
    return parser


def load_samples(folder: Path) -> list[dict[str, Any]]:
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"{labels} not found: pass --samples pointing at a folder with labels.csv and images/")
    rows = []
    with open(labels, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("left_file") and row.get("right_file"):
                row["truth"] = [c for c in CLASS_CODES if row.get(c) == "1"]
                rows.append(row)
    return rows


def format_eyes(res: Any, keywords: dict[str, str] | None = None) -> str:
    """Which eye carries each positive finding (the per-eye heads), beside the graders' keywords."""
    if not res.left_probabilities:
        return "by eye: the model has no per-eye heads"
    names = dict(zip(res.class_codes, res.class_names))
    found = [f"{names.get(c, c)} ({eye} eye{'s' if eye == 'both' else ''})"
             for c, eye in zip(res.positive_codes, res.positive_eyes) if c != "N"]
    text = "by eye: " + ("; ".join(found) if found else "no finding in either eye")
    if keywords:
        text += f"  | graders: left '{keywords.get('left') or '-'}', right '{keywords.get('right') or '-'}'"
    return text


def format_result(res: Any, truth: list[str], keywords: dict[str, str] | None = None) -> str:
    """A small readable block for one DiagnosisResult."""
    lines = [f"exam {res.exam_id or '-'}  status {STATUS.get(res.status, res.status)}  "
             f"referable {'YES' if res.referable else 'no'}  truth {','.join(truth) or '-'}"]
    if res.status == 0:
        order = sorted(range(len(res.probabilities)), key=lambda i: -res.probabilities[i])
        lines.append("  top: " + "  ".join(f"{res.class_codes[i]} {res.probabilities[i]:.2f}" for i in order[:3]))
        pos = set(res.positive_codes)
        hits = sorted(pos & set(truth))
        lines.append(f"  positives {','.join(res.positive_codes) or '-'}  "
                     f"(matching truth: {','.join(hits) or 'none'})  {res.summary}")
        lines.append("  " + format_eyes(res, keywords))
    else:
        lines.append(f"  {res.status_message}")
    q = lambda v: "n/a" if math.isnan(v) else f"{v:.2f}"  # noqa: E731
    lines.append(
        f"  quality L {q(res.left_quality)} R {q(res.right_quality)}  latency total {res.total_ms:.1f} ms "
        f"(preprocess {res.preprocess_ms:.1f}, inference {res.inference_ms:.1f})  model {res.model_id} on {res.backend}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dms_net_core.data.preprocess import load_rgb
    from dms_net_ros.image_codec import rgb_to_image_msg
    from dms_net_ros.msg import DiagnosisResult

    folder = Path(args.samples)
    samples = load_samples(folder)[: args.limit or None]
    rclpy.init()
    node = rclpy.create_node("dms_demo_camera", namespace=args.namespace or None)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {eye: node.create_publisher(Image, f"{eye}/image_raw", reliable) for eye in ("left", "right")}
    exam_pub = node.create_publisher(String, "exam_id", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    results: list[Any] = []
    node.create_subscription(DiagnosisResult, "diagnosis", results.append, reliable)

    def spin_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            rclpy.spin_once(node, timeout_sec=0.05)
        return pred()

    code = 0
    try:
        ready = lambda: (all(p.get_subscription_count() > 0 for p in pubs.values())  # noqa: E731
                         and node.count_publishers(pubs["left"].topic_name.rsplit("/left/", 1)[0] + "/diagnosis") > 0)
        if not spin_until(ready, args.timeout):
            print(f"no diagnosis node subscribed to {pubs['left'].topic_name} within {args.timeout:.0f} s: "
                  "is it running in this ROS_DOMAIN_ID?", file=sys.stderr)
            return 1
        spin_until(lambda: False, 0.5)
        print(f"publishing {len(samples)} real eye pairs from {folder}\n")
        counts = {"OK": 0, "UNGRADABLE": 0, "ERROR": 0}
        for i, row in enumerate(samples):
            exam_pub.publish(String(data=f"demo-{row['patient_id']}"))
            spin_until(lambda: False, 0.3)
            stamp = node.get_clock().now().to_msg()
            for eye in ("left", "right"):
                msg = rgb_to_image_msg(load_rgb(str(folder / row[f"{eye}_file"])), "rgb8",
                                       stamp=stamp, frame_id="fundus_camera")
                pubs[eye].publish(msg)
            n = len(results)
            if not spin_until(lambda: len(results) > n, args.timeout):
                print(f"no result for patient {row['patient_id']} within {args.timeout:.0f} s", file=sys.stderr)
                code = 1
                continue
            res = results[-1]
            counts[STATUS.get(res.status, "ERROR")] += 1
            keywords = {"left": row.get("left_keywords", ""), "right": row.get("right_keywords", "")}
            print(f"[{i + 1}/{len(samples)}] " + format_result(res, row["truth"], keywords) + "\n")
        print("results: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    except KeyboardInterrupt:
        code = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
