"""Per-eye work of one pair (decode -> quality gate -> preprocess), both eyes at once.

The two eyes are independent until inference, and OpenCV and NumPy release the GIL, so
running them on two threads roughly halves the node's per-pair overhead on a 2048x1536
camera pair (see benchmarks/node_overhead.py). No rclpy here: the node and the benchmark
call the same code.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dms_net_core.data.preprocess import PreprocessConfig, prepare_eye_uint8
from dms_net_core.data.quality import QualityReport, assess_quality
from dms_net_ros.image_codec import ImageDecodeError, msg_to_rgb


@dataclass
class PreparedEye:
    """One eye after the node's pre-inference steps; ``error`` set means decoding failed."""

    rgb: np.ndarray | None = None
    error: str | None = None
    quality: QualityReport | None = None
    #: uint8 [S,S,3], the prepared eye the backend normalises (on the GPU for the torch backend)
    #: and the attention overlay is drawn on; None when ungradable or undecodable
    image: np.ndarray | None = None


def grade_eye(rgb: np.ndarray, quality_min_score: float) -> QualityReport:
    """The node's quality gate: `assess_quality`, plus the ``quality_min_score`` floor.

    One definition for the node and the bag evaluator, so a live UNGRADABLE and an offline
    one always mean the same thing.
    """
    rep = assess_quality(rgb)
    if rep.gradable and rep.score < quality_min_score:
        rep.gradable = False
        rep.reasons.append(f"quality score {rep.score:.2f} below quality_min_score {quality_min_score:.2f}")
    return rep


def prepare_eye(msg: Any, preprocess: PreprocessConfig, *, max_pixels: int, quality_gate: bool,
                quality_min_score: float) -> PreparedEye:
    """Decode, grade and prepare one eye image message (never raises on bad input).

    ``rgb`` of the result may alias ``msg``'s buffer: keep the message while using it.
    """
    try:
        rgb = msg_to_rgb(msg, max_pixels, copy=False)  # the caller holds msg until it is done
    except ImageDecodeError as exc:
        return PreparedEye(error=str(exc))
    out = PreparedEye(rgb=rgb)
    if quality_gate:
        rep = out.quality = grade_eye(rgb, quality_min_score)
        if not rep.gradable:
            return out
    out.image = prepare_eye_uint8(rgb, preprocess)
    return out


class PairPreparer:
    """Runs `prepare_eye` for the left and right image of a pair on a two-thread pool."""

    def __init__(self, threads: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dms_eye") if threads > 1 else None

    def prepare(self, left_msg: Any, right_msg: Any, preprocess: PreprocessConfig, **options: Any) -> tuple[PreparedEye, PreparedEye]:
        if self._pool is None:
            return prepare_eye(left_msg, preprocess, **options), prepare_eye(right_msg, preprocess, **options)
        right = self._pool.submit(prepare_eye, right_msg, preprocess, **options)
        left = prepare_eye(left_msg, preprocess, **options)
        return left, right.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
