"""The camera-frame downscale (`HalvingPyramid` / `downscale`) is a box filter at a fraction of
INTER_AREA's cost, and one eye's network input and quality-gate view share its passes.

Speed is in benchmarks/area_resize.py; here: exact output sizes, 2x halvings equal to INTER_AREA,
within a level or so of one INTER_AREA pass elsewhere, the shared pyramid giving exactly what a
fresh one gives, and preprocessing of a camera frame unchanged in kind.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dms_net_core.data.preprocess import (
    EyeFrame,
    HalvingPyramid,
    PreprocessConfig,
    crop_pad_resize,
    downscale,
    find_fov,
    load_rgb,
    prepare_eye_uint8,
)

PHOTO = Path(__file__).resolve().parents[2] / "demo" / "samples" / "images" / "556_left.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_rgb(str(PHOTO))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _camera_frame(photo: np.ndarray, disc: int = 1490) -> np.ndarray:
    d = cv2.resize(photo, (disc, disc), interpolation=cv2.INTER_CUBIC)
    top, left = (1536 - disc) // 2, (2048 - disc) // 2
    return cv2.copyMakeBorder(d, top, 1536 - disc - top, left, 2048 - disc - left, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def test_power_of_two_ratios_are_repeated_inter_area_halvings(photo):
    square = cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    half = cv2.resize(square, (512, 512), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(downscale(square, (512, 512)), half)
    np.testing.assert_array_equal(downscale(square, (256, 256)),
                                  cv2.resize(half, (256, 256), interpolation=cv2.INTER_AREA))
    assert _mean_abs(downscale(square, (256, 256)), cv2.resize(square, (256, 256), interpolation=cv2.INTER_AREA)) < 0.3


@pytest.mark.parametrize("side", [1490, 1536, 1411, 1601, 700, 513])
@pytest.mark.parametrize("target", [256, 448])
def test_other_ratios_stay_within_about_a_level_of_inter_area(photo, side, target):
    assert target < side  # every side here is a downscale to every target
    crop = cv2.resize(photo, (side, side - 7), interpolation=cv2.INTER_CUBIC)
    dsize = (target, round((side - 7) * target / side))
    out = downscale(crop, dsize)
    assert out.shape == (dsize[1], dsize[0], 3) and out.dtype == np.uint8
    assert _mean_abs(out, cv2.resize(crop, dsize, interpolation=cv2.INTER_AREA)) < 1.5


def test_enlarging_is_bilinear_so_the_256px_training_images_are_prepared_as_before(photo):
    crop = photo[3:250, 5:251]
    np.testing.assert_array_equal(downscale(crop, (256, 257)),
                                  cv2.resize(crop, (256, 257), interpolation=cv2.INTER_LINEAR))


def test_a_shared_pyramid_gives_what_fresh_ones_give(photo):
    crop = cv2.resize(photo, (1490, 1483), interpolation=cv2.INTER_CUBIC)
    shared = HalvingPyramid(crop)
    sizes = [(256, 255), (448, 446), (64, 64), (300, 299)]
    outs = [shared.resize(s) for s in sizes]  # small after large after small: levels reused, never rebuilt wrong
    for size, out in zip(sizes, outs):
        np.testing.assert_array_equal(out, downscale(crop, size))


def test_the_gate_view_and_the_network_input_come_from_one_frame_in_any_order(photo):
    frame = _camera_frame(photo)
    cfg = PreprocessConfig(image_size=448)
    eye = EyeFrame(frame)
    view = eye.disc_view(256)
    np.testing.assert_array_equal(eye.network_eye(cfg), crop_pad_resize(frame, cfg))
    np.testing.assert_array_equal(view, EyeFrame(frame).disc_view(256))
    assert max(view.shape[:2]) == 256
    # the 256 px bundle's input is the gate's view, padded to a square
    eye256 = EyeFrame(frame)
    net = eye256.network_eye(PreprocessConfig(image_size=256))
    h, w = view.shape[:2]
    top, left = (256 - h) // 2, (256 - w) // 2
    np.testing.assert_array_equal(net[top:top + h, left:left + w], eye256.disc_view(256))
    np.testing.assert_array_equal(prepare_eye_uint8(frame, cfg), crop_pad_resize(frame, cfg))


def test_camera_frame_preprocesses_like_a_plain_area_resize(photo):
    """A 2048x1536 frame with a 1490 px disc: same square network input as cropping + INTER_AREA."""
    frame = _camera_frame(photo)
    out = crop_pad_resize(frame, PreprocessConfig(image_size=256))
    x0, y0, x1, y1 = find_fov(frame)[0]
    assert 1300 < x1 - x0 <= 1500 and 1300 < y1 - y0 <= 1500  # the disc, exact to find_fov's 8 px stride
    h, w = y1 - y0, x1 - x0
    nh, nw = round(h * 256 / max(h, w)), round(w * 256 / max(h, w))
    ref = cv2.resize(frame[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
    top, left = (256 - nh) // 2, (256 - nw) // 2
    assert out.shape == (256, 256, 3)
    assert _mean_abs(out[top:top + nh, left:left + nw], ref) < 1.5


def test_a_frame_without_fov_crop_or_with_its_own_threshold_is_prepared_whole(photo):
    frame = _camera_frame(photo)
    whole = crop_pad_resize(frame, PreprocessConfig(image_size=256, fov_crop=False))
    assert whole.shape == (256, 256, 3) and whole[:20].max() == 0  # 2048x1536 -> 256x192 padded top and bottom
    eye = EyeFrame(frame, fov_threshold=15)
    np.testing.assert_array_equal(eye.network_eye(PreprocessConfig(image_size=256, fov_threshold=40)),
                                  crop_pad_resize(frame, PreprocessConfig(image_size=256, fov_threshold=40)))
