"""Node overhead per pair, network excluded: decode, quality gate, prepare, message build, publish.

Two 2048x1536 rgb8 eye images (a real ODIR photograph upscaled to clinical size, so the FOV
crop and quality gate see a real fundus) go through exactly the functions the node's worker
calls, minus `backend.infer`. Prints a p50/p95 table in milliseconds.

The node hands the backend prepared uint8 eyes; normalising them is part of `backend.infer`
(on the host for ONNX Runtime and TensorRT, inside the CUDA graph for the torch backend), so
the node rows exclude it and the "normalise" row shows what the host backends add.

    python benchmarks/node_overhead.py --iterations 30 --image-size 448
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
                   help="fundus disc diameter in px (a camera leaves a margin; 1536 would be an exact 6x resize, OpenCV's fast case)")
    p.add_argument("--image-size", type=int, default=448, help="network input size (the bundle's preprocess.image_size)")
    return p


def clinical_frame(eye: str, width: int, height: int, disc_px: int) -> np.ndarray:
    from dms_net_core.data.preprocess import load_rgb

    rgb = load_rgb(str(REPO / "demo" / "samples" / "images" / f"556_{eye}.jpg"))
    disc = cv2.resize(rgb, (disc_px, disc_px), interpolation=cv2.INTER_CUBIC)
    top, left = (height - disc_px) // 2, (width - disc_px) // 2
    return cv2.copyMakeBorder(disc, top, height - disc_px - top, left, width - disc_px - left, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    from dms_net_core.classes import CLASS_CODES, CLASS_NAMES
    from dms_net_core.data.preprocess import PreprocessConfig, normalize, prepare_eye_uint8
    from dms_net_core.data.quality import assess_quality
    from dms_net_core.postprocess import decide
    from dms_net_ros.image_codec import msg_to_rgb, rgb_to_image_msg
    from dms_net_ros.messages import ResultContext, ok_result
    from dms_net_ros.msg import DiagnosisResult

    cfg = PreprocessConfig(image_size=args.image_size)
    msgs = {eye: rgb_to_image_msg(clinical_frame(eye, args.width, args.height, min(args.disc, args.height)), "rgb8") for eye in ("left", "right")}
    rclpy.init()
    node = rclpy.create_node("dms_overhead_bench")
    pub = node.create_publisher(DiagnosisResult, "diagnosis_bench", 10)
    probs = np.linspace(0.05, 0.95, 8, dtype=np.float32)
    from dms_net_ros.eye_pipeline import PairPreparer

    preparer = PairPreparer(threads=2)
    options = dict(max_pixels=16_000_000, quality_gate=True, quality_min_score=0.0)
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "quality", "prepare (crop, resize)", "message", "publish", "total (one thread)", "node: both eyes on 2 threads + message + publish", "normalise (2, host backends, inside infer)")}
    try:
        for i in range(args.iterations + 2):
            t0 = time.perf_counter()
            left, right = msg_to_rgb(msgs["left"]), msg_to_rgb(msgs["right"])
            t1 = time.perf_counter()
            ql, qr = assess_quality(left), assess_quality(right)
            t2 = time.perf_counter()
            prepared = prepare_eye_uint8(left, cfg), prepare_eye_uint8(right, cfg)
            t3 = time.perf_counter()
            msg = ok_result(ResultContext(exam_id="bench", left_quality=ql, right_quality=qr), decide(probs, np.full(8, 0.5, np.float32)), CLASS_CODES, CLASS_NAMES)
            t4 = time.perf_counter()
            pub.publish(msg)
            t5 = time.perf_counter()
            eyes = preparer.prepare(msgs["left"], msgs["right"], cfg, **options)
            msg = ok_result(ResultContext(exam_id="bench", left_quality=eyes[0].quality, right_quality=eyes[1].quality),
                            decide(probs, np.full(8, 0.5, np.float32)), CLASS_CODES, CLASS_NAMES)
            pub.publish(msg)
            t6 = time.perf_counter()
            normalize(prepared[0], cfg), normalize(prepared[1], cfg)
            t7 = time.perf_counter()
            if i < 2:
                continue  # warm-up
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0, t6 - t5, t7 - t6)):
                v_ms = v * 1e3
                stages[k].append(v_ms)
    finally:
        preparer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"node overhead per pair of {args.width}x{args.height} rgb8 images, {args.disc} px fundus disc (network excluded), "
          f"input {args.image_size} px, {args.iterations} iterations, {os.cpu_count()} CPUs")
    print("| stage | p50 ms | p95 ms |\n|---|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {np.percentile(v, 50):.2f} | {np.percentile(v, 95):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
