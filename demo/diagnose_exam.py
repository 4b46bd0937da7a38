"""Diagnose one demo exam through the ``diagnose_exam`` action and print its progress.

Plays both sides of a robot exam room: the workflow sends a DiagnoseExam goal that waits for
the camera topics, and, once the node reports it is waiting, the "fundus camera" photographs
the left eye and then the right one (real images from ``<samples>/images``). Every feedback
stage and the result are printed as they arrive. Needs no ros2 CLI (plain rclpy).

    python demo/diagnose_exam.py --namespace /demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from publish_samples import format_result, load_samples  # demo/ is the script's directory

OUTCOMES = {0: "OK", 1: "UNGRADABLE", 2: "ERROR", 3: "TIMEOUT", 4: "CANCELED", 5: "REJECTED"}
GOAL_STATUS = {4: "SUCCEEDED", 5: "CANCELED", 6: "ABORTED"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default=str(Path(__file__).resolve().parent / "samples"),
                        help="folder with labels.csv and images/")
    parser.add_argument("--namespace", default="", help="namespace of the node (its action and topics are relative)")
    parser.add_argument("--patient", default="", help="patient_id from labels.csv (default: the first one)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the node, and the goal's timeout_s")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dms_net_core.data.preprocess import load_rgb
    from dms_net_ros.action import DiagnoseExam
    from dms_net_ros.image_codec import rgb_to_image_msg

    folder = Path(args.samples)
    rows = [r for r in load_samples(folder) if not args.patient or r["patient_id"] == args.patient]
    if not rows:
        print(f"patient {args.patient!r} not in {folder / 'labels.csv'}", file=sys.stderr)
        return 1
    row = rows[0]
    rclpy.init()
    node = rclpy.create_node("dms_demo_workflow", namespace=args.namespace or None)
    camera = {eye: node.create_publisher(Image, f"{eye}/image_raw",
                                         QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
              for eye in ("left", "right")}
    action = ActionClient(node, DiagnoseExam, "diagnose_exam")
    stamp = node.get_clock().now().to_msg()
    stages: list[int] = []

    def photograph(eye: str) -> None:
        camera[eye].publish(rgb_to_image_msg(load_rgb(str(folder / row[f"{eye}_file"])), "rgb8",
                                             stamp=stamp, frame_id="fundus_camera"))

    def on_feedback(msg: Any) -> None:
        f = msg.feedback
        stages.append(f.stage)
        eyes = ", ".join(e for e, got in (("left", f.left_received), ("right", f.right_received)) if got) or "none"
        print(f"  feedback {f.elapsed_s:6.3f} s  {f.stage_name:<22} eyes arrived: {eyes}", flush=True)

    def spin_until(pred: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            rclpy.spin_once(node, timeout_sec=0.05)
        return pred()

    code = 0
    try:
        if not action.wait_for_server(timeout_sec=args.timeout):
            print(f"no diagnose_exam action server within {args.timeout:.0f} s: "
                  "is the node running in this ROS_DOMAIN_ID?", file=sys.stderr)
            return 1
        spin_until(lambda: all(p.get_subscription_count() > 0 for p in camera.values()), args.timeout)  # camera matched
        spin_until(lambda: False, 0.5)
        exam_id = f"demo-{row['patient_id']}"
        print(f"sending DiagnoseExam goal: exam {exam_id}, images from the camera topics, timeout {args.timeout:.0f} s")
        sent = action.send_goal_async(DiagnoseExam.Goal(exam_id=exam_id, timeout_s=args.timeout),
                                      feedback_callback=on_feedback)
        spin_until(sent.done, args.timeout)
        handle = sent.result()
        done = handle.get_result_async()
        # the camera: the left eye once the node waits for the exam, the right eye once it waits for that
        spin_until(lambda: DiagnoseExam.Feedback.STAGE_WAITING_FOR_EYES in stages, 2.0)
        photograph("left")
        spin_until(lambda: DiagnoseExam.Feedback.STAGE_WAITING_FOR_RIGHT in stages or done.done(), 2.0)
        photograph("right")
        if not spin_until(done.done, args.timeout + 5):
            print("no result from the action", file=sys.stderr)
            return 1
        response = done.result()
        result = response.result
        print(f"result: {OUTCOMES.get(result.outcome, result.outcome)} "
              f"(goal {GOAL_STATUS.get(response.status, response.status)}): {result.reason}\n")
        if result.outcome <= DiagnoseExam.Result.OUTCOME_ERROR:  # a DiagnosisResult was made (and published)
            print(format_result(result.diagnosis, row["truth"]))
        code = 0 if result.outcome == DiagnoseExam.Result.OUTCOME_OK else 1
    except KeyboardInterrupt:
        code = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
