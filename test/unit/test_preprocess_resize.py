"""The camera-frame downscale (`area_resize`) is INTER_AREA's box filter at a fraction of its cost.

Speed is in benchmarks/area_resize.py; here: same output as INTER_AREA at integer ratios, within
a level or so elsewhere, exact output sizes, and preprocessing of a camera frame unchanged in kind.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dms_net_core.data.preprocess import PreprocessConfig, area_resize, crop_pad_resize, find_fov, load_rgb

PHOTO = Path(__file__).resolve().parents[2] / "demo" / "samples" / "images" / "556_left.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_rgb(str(PHOTO))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_integer_ratio_is_exactly_inter_area(photo):
    crop = cv2.resize(photo, (1536, 1280), interpolation=cv2.INTER_CUBIC)
    out = area_resize(crop, (256, 213))
    assert out.shape == (213, 256, 3)
    ref = cv2.resize(crop, (256, 213), interpolation=cv2.INTER_AREA)
    assert _mean_abs(out, ref) < 0.6  # 1280/213 is not an integer: the second pass runs
    square = cv2.resize(photo, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(area_resize(square, (256, 256)), cv2.resize(square, (256, 256), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("side", [1490, 1411, 1601, 700, 513])
def test_non_integer_ratios_stay_within_about_a_level_of_inter_area(photo, side):
    crop = cv2.resize(photo, (side, side - 7), interpolation=cv2.INTER_CUBIC)
    dsize = (256, round((side - 7) * 256 / side))
    out = area_resize(crop, dsize)
    assert out.shape == (dsize[1], dsize[0], 3) and out.dtype == np.uint8
    assert _mean_abs(out, cv2.resize(crop, dsize, interpolation=cv2.INTER_AREA)) < 1.5


def test_small_ratio_falls_back_to_inter_area(photo):
    crop = cv2.resize(photo, (400, 400), interpolation=cv2.INTER_CUBIC)  # ratio 1.56: no integer pass
    np.testing.assert_array_equal(area_resize(crop, (256, 256)), cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA))


def test_camera_frame_preprocesses_like_a_plain_area_resize(photo):
    """A 2048x1536 frame with a 1490 px disc: same square network input as cropping + INTER_AREA."""
    disc = cv2.resize(photo, (1490, 1490), interpolation=cv2.INTER_CUBIC)
    frame = cv2.copyMakeBorder(disc, 23, 23, 279, 279, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    out = crop_pad_resize(frame, PreprocessConfig(image_size=256))
    x0, y0, x1, y1 = find_fov(frame)[0]
    assert 1300 < x1 - x0 <= 1500 and 1300 < y1 - y0 <= 1500  # the disc, exact to find_fov's 8 px stride
    h, w = y1 - y0, x1 - x0
    nh, nw = round(h * 256 / max(h, w)), round(w * 256 / max(h, w))
    ref = cv2.resize(frame[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
    top, left = (256 - nh) // 2, (256 - nw) // 2
    assert out.shape == (256, 256, 3)
    assert _mean_abs(out[top:top + nh, left:left + nw], ref) < 1.5
