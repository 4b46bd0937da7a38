"""Node overhead per pair, network excluded: decode, quality grade + prepare, message build, publish.

Two 2048x1536 rgb8 eye images (a real ODIR photograph upscaled to clinical size, so the FOV
crop and quality gate see a real fundus) go through exactly what the node's worker runs
(`PairPreparer`: decode, then `ExamPipeline.prepare_eye`; the pipeline's verdict; the
``DiagnosisResult`` of the result; publish), minus `backend.infer`. Prints a p50/p95 table in
milliseconds; the row issue 14 holds to 10 ms p50 is "node: both eyes on 2 threads + message +
publish".

The node hands the backend prepared uint8 eyes; normalising them is part of `backend.infer`
(on the host for ONNX Runtime and TensorRT, inside the CUDA graph for the torch backend), so
the node rows exclude it and the "normalise" row shows what the host backends add.

    python benchmarks/node_overhead.py --iterations 100 --image-size 448
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--height", type=int, default=1536)
    p.add_argument("--disc", type=int, default=1490,
                   help="fundus disc diameter in px (a camera leaves a margin; 1536 would be an exact 6x resize, "
                   "OpenCV's fast case)")
    p.add_argument("--image-size", type=int, default=448,
                   help="network input size (the bundle's preprocess.image_size)")
    return p


def clinical_frame(eye: str, width: int, height: int, disc_px: int) -> np.ndarray:
    from dms_net_core.data.preprocess import load_rgb

    rgb = load_rgb(str(REPO / "demo" / "samples" / "images" / f"556_{eye}.jpg"))
    disc = cv2.resize(rgb, (disc_px, disc_px), interpolation=cv2.INTER_CUBIC)
    top, left = (height - disc_px) // 2, (width - disc_px) // 2
    return cv2.copyMakeBorder(disc, top, height - disc_px - top, left, width - disc_px - left, cv2.BORDER_CONSTANT,
                              value=(0, 0, 0))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    from dms_net_core.classes import CLASS_CODES, CLASS_NAMES, NUM_CLASSES
    from dms_net_core.data.preprocess import PreprocessConfig, normalize
    from dms_net_core.exam_pipeline import ExamPipeline, ExamResult, ExamStatus
    from dms_net_core.postprocess import decide
    from dms_net_ros.image_codec import rgb_to_image_msg
    from dms_net_ros.messages import ResultContext, exam_result_msg
    from dms_net_ros.msg import DiagnosisResult
    from dms_net_ros.pair_preparer import PairPreparer, decode_eye

    cfg = PreprocessConfig(image_size=args.image_size)
    msgs = {eye: rgb_to_image_msg(clinical_frame(eye, args.width, args.height, min(args.disc, args.height)), "rgb8")
            for eye in ("left", "right")}
    rclpy.init()
    node = rclpy.create_node("dms_overhead_bench")
    pub = node.create_publisher(DiagnosisResult, "diagnosis_bench", 10)
    probs = np.linspace(0.05, 0.95, NUM_CLASSES, dtype=np.float32)
    thresholds = np.full(NUM_CLASSES, 0.5, np.float32)
    pipeline = ExamPipeline(backend=None, preprocess=cfg, thresholds=thresholds)  # everything but inference
    preparer = PairPreparer(pipeline, threads=2)

    def ok_message(left, right):
        result = pipeline.verdict(left, right)
        assert result is None, result.message  # a gradable pair: it would go to the network
        result = ExamResult(ExamStatus.OK, "ok", left, right, probabilities=probs, decision=decide(probs, thresholds))
        return exam_result_msg(ResultContext(exam_id="bench"), result, CLASS_CODES, CLASS_NAMES)

    stages: dict[str, list[float]] = {k: [] for k in (
        "decode (2 eyes)", "grade + prepare (2 eyes)", "message", "publish", "total (one thread)",
        "node: both eyes on 2 threads + message + publish", "normalise (2, host backends, inside infer)")}
    try:
        for i in range(args.iterations + 2):
            t0 = time.perf_counter()
            left_rgb, right_rgb = decode_eye(msgs["left"]), decode_eye(msgs["right"])
            t1 = time.perf_counter()
            left, right = pipeline.prepare_eye(left_rgb), pipeline.prepare_eye(right_rgb)
            t2 = time.perf_counter()
            msg = ok_message(left, right)
            t3 = time.perf_counter()
            pub.publish(msg)
            t4 = time.perf_counter()
            left2, right2 = preparer.prepare(msgs["left"], msgs["right"])
            pub.publish(ok_message(left2, right2))
            t5 = time.perf_counter()
            normalize(left.image, cfg), normalize(right.image, cfg)
            t6 = time.perf_counter()
            if i < 2:
                continue  # warm-up
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, t5 - t4, t6 - t5)):
                stages[k].append(v * 1e3)
    finally:
        preparer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"node overhead per pair of {args.width}x{args.height} rgb8 images, {args.disc} px fundus disc "
          f"(network excluded), input {args.image_size} px, {args.iterations} iterations, {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at the end")
    print("| stage | p50 ms | p95 ms |\n|---|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {np.percentile(v, 50):.2f} | {np.percentile(v, 95):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
