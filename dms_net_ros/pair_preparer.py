"""Both eyes of a pair, from image messages to prepared eyes at once (the node's worker uses it).

Decoding is the ROS side's job (`image_codec`); grading and preparing are the exam pipeline's
(`ExamPipeline.prepare_eye`). The two eyes are independent until inference, and OpenCV and
NumPy release the GIL, so each eye is decoded and prepared on its own thread, which roughly
halves the node's per-pair overhead on an idle 2-core machine (benchmarks/node_overhead.py).
No rclpy here: the node, the bag evaluator and the benchmark call the same code.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dms_net_core.exam_pipeline import ExamPipeline, Eye, EyeError, PreparedEye
from dms_net_ros.image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, msg_to_rgb


def decode_eye(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Eye:
    """An image message as the pipeline's eye: the RGB photograph, or an `EyeError` saying why
    it cannot be one. An rgb8 image without row padding is not copied (the array keeps the
    message's buffer alive)."""
    try:
        return msg_to_rgb(msg, max_pixels, copy=False)
    except ImageDecodeError as exc:
        return EyeError(str(exc))


class PairPreparer:
    """Decodes and prepares the left and right image of a pair, on a two-thread pool."""

    def __init__(self, pipeline: ExamPipeline, max_pixels: int = DEFAULT_MAX_PIXELS, threads: int = 2) -> None:
        self.pipeline = pipeline
        self.max_pixels = int(max_pixels)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dms_eye") if threads > 1 else None

    def prepare_one(self, msg: Any) -> PreparedEye:
        return self.pipeline.prepare_eye(decode_eye(msg, self.max_pixels))

    def prepare(self, left_msg: Any, right_msg: Any) -> tuple[PreparedEye, PreparedEye]:
        if self._pool is None:
            return self.prepare_one(left_msg), self.prepare_one(right_msg)
        right = self._pool.submit(self.prepare_one, right_msg)
        left = self.prepare_one(left_msg)
        return left, right.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
