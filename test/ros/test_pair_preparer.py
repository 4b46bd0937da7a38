"""The node's per-pair preparation: each eye decoded (ROS side) and handed to the exam pipeline's
`prepare_eye`, both eyes on two threads, gives exactly the sequential result."""

from __future__ import annotations

import numpy as np

from test.ros.harness import require_ros, sample_rgb

require_ros()

from dms_net_core.data.preprocess import PreprocessConfig, prepare_eye_uint8  # noqa: E402
from dms_net_core.data.quality import assess_quality  # noqa: E402
from dms_net_core.exam_pipeline import ExamPipeline  # noqa: E402
from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402
from dms_net_ros.pair_preparer import PairPreparer  # noqa: E402

CFG = PreprocessConfig(image_size=64)


def _pipeline() -> ExamPipeline:
    return ExamPipeline(backend=None, preprocess=CFG)  # preparation only: no inference here


def test_two_threads_give_exactly_the_sequential_result():
    left_rgb, right_rgb = sample_rgb("556", "left"), sample_rgb("556", "right")
    preparer = PairPreparer(_pipeline(), max_pixels=10_000_000, threads=2)
    try:
        for _ in range(3):  # repeated: the pool is reused across pairs
            left, right = preparer.prepare(rgb_to_image_msg(left_rgb, "rgb8"), rgb_to_image_msg(right_rgb, "bgr8"))
            np.testing.assert_array_equal(left.image, prepare_eye_uint8(left_rgb, CFG))
            np.testing.assert_array_equal(right.image, prepare_eye_uint8(right_rgb, CFG))
            assert left.quality.score == assess_quality(left_rgb).score and right.quality.gradable
    finally:
        preparer.close()


def test_bad_eye_reports_instead_of_raising_and_the_other_eye_is_still_prepared():
    good = sample_rgb("951", "left")
    broken = rgb_to_image_msg(good, "rgb8")
    broken.step = broken.step - 1  # step/size mismatch
    black = np.zeros_like(good)
    preparer = PairPreparer(_pipeline(), max_pixels=10_000_000, threads=2)
    try:
        left, right = preparer.prepare(broken, rgb_to_image_msg(black, "rgb8"))
    finally:
        preparer.close()
    assert left.error and "step" in left.error and left.image is None
    assert right.error is None and not right.quality.gradable and right.image is None


def test_the_pixel_limit_is_the_preparers():
    rgb = sample_rgb("951", "left")
    preparer = PairPreparer(_pipeline(), max_pixels=rgb.shape[0] * rgb.shape[1] - 1, threads=1)
    left, _ = preparer.prepare(rgb_to_image_msg(rgb, "rgb8"), rgb_to_image_msg(rgb, "rgb8"))
    assert left.error and "max_pixels" in left.error and left.image is None
