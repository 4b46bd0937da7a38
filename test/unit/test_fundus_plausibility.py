"""The quality gate rejects what is not a fundus photograph and keeps real fundus photographs.

Real side: the 16 demo photographs (ODIR-5K), the same placed in 2048x1536 and 4096x3072
camera frames (also clipped at the top and bottom by the sensor, as many fundus cameras
frame them), a monochrome copy (mono cameras are supported), and scikit-image's
``retina.jpg`` (another camera, 1411 px). With ``ODIR_256_DIR`` set, all 5,241 ODIR-256
photographs. Non-fundus side: `test/fakes/non_fundus.py`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dms_net_core.data.fundus_plausibility import PlausibilityLimits
from dms_net_core.data.preprocess import load_rgb
from dms_net_core.data.quality import QualityThresholds, assess_quality
from test.fakes.non_fundus import in_round_vignette, library_fundus, library_photographs, synthetic_non_fundus

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGES = sorted((REPO / "demo" / "samples" / "images").glob("*.jpg"))
SYNTHETIC = synthetic_non_fundus()
PHOTOS = library_photographs()
#: Photographs of other things that still pass, documented in the README as the gate's limit:
#: in fundus-like colours, with fundus-like detail, cropped into a round black vignette.
KNOWN_TO_PASS = {
    "photo:logo.png", "photo:logo.png in a round vignette", "photo:cell.png in a round vignette",
    "photo:chelsea.png in a round vignette", "photo:clock_motion.png in a round vignette",
    "photo:moon.png in a round vignette", "photo:text.png in a round vignette",
}


def _camera_frame(rgb: np.ndarray, width: int, height: int, disc: int) -> np.ndarray:
    """``rgb`` scaled to a ``disc`` px disc centred in a black frame, cut to the frame height."""
    big = cv2.resize(rgb, (disc, disc), interpolation=cv2.INTER_CUBIC)
    top = max(0, (disc - height) // 2)
    big = big[top: top + height]
    pad_y, pad_x = height - big.shape[0], width - big.shape[1]
    return cv2.copyMakeBorder(big, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2, cv2.BORDER_CONSTANT,
                              value=(0, 0, 0))


@pytest.mark.parametrize("path", DEMO_IMAGES, ids=lambda p: p.stem)
def test_real_demo_photographs_pass_in_every_framing(path):
    rgb = load_rgb(str(path))
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    for name, image in (
        ("as shipped", rgb),
        ("2048x1536 frame", _camera_frame(rgb, 2048, 1536, 1490)),
        ("2048x1536 frame, disc clipped", _camera_frame(rgb, 2048, 1536, 1700)),
        ("4096x3072 frame", _camera_frame(rgb, 4096, 3072, 2900)),
        ("monochrome", grey),
    ):
        report = assess_quality(image)
        assert report.gradable, (name, report.reasons, report.measures)
        assert report.measures["noise_sigma"] < PlausibilityLimits().max_noise_sigma


def test_a_fundus_from_another_camera_passes():
    retina = library_fundus()
    if retina is None:
        pytest.skip("scikit-image's retina.jpg not installed (pip install -r requirements/test.txt)")
    report = assess_quality(retina)
    assert report.gradable, report.reasons


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_generated_non_fundus_images_are_not_gradable(name):
    report = assess_quality(SYNTHETIC[name])
    assert not report.gradable and report.score == 0.0, (name, report.measures)
    assert report.reasons


@pytest.mark.parametrize("size", [64 * 4, 2048])
def test_noise_frames_of_camera_size_are_not_gradable(size):
    """The issue's case: uniform noise scored 0.999; at camera size too (downscaling averages noise)."""
    rng = np.random.default_rng(size)
    for image in (rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8),
                  np.clip(rng.normal(128, 10, (size * 3 // 4, size, 3)), 0, 255).astype(np.uint8)):
        report = assess_quality(image)
        assert not report.gradable
        assert any(r.startswith("not a fundus photograph") for r in report.reasons), report.reasons


@pytest.mark.parametrize("grain", [0.0, 0.7, 1.5, 3.0])
@pytest.mark.parametrize("amplitude", [2, 8, 32])
def test_fundus_coloured_disc_of_noise_is_not_gradable_at_any_amplitude(grain, amplitude):
    """Noise inside a fundus-coloured disc on black, from faint to strong, fine to 3 px grain."""
    size = 512
    rng = np.random.default_rng(int(grain * 10) + amplitude)
    noise = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
    if grain:
        noise = cv2.GaussianBlur(noise, (0, 0), grain)
        noise /= noise.std()
    disc = np.clip(noise * amplitude + np.float32([170, 80, 30]), 0, 255).astype(np.uint8)
    image = in_round_vignette(disc, size)
    report = assess_quality(image)
    assert not report.gradable, report.measures


def _photo_cases() -> list[tuple[str, np.ndarray]]:
    cases = [(name, rgb) for name, rgb in PHOTOS.items()]
    cases += [(f"{name} in a round vignette", in_round_vignette(rgb)) for name, rgb in PHOTOS.items()]
    return cases


#: a known pass is a strict xfail: the day the gate rejects it, the test fails until it leaves KNOWN_TO_PASS
_KNOWN_LIMIT = pytest.mark.xfail(strict=True, reason="known limit (README: quality gate): "
                                                     "fundus-like colour and detail in a round vignette")


def _photo_params() -> list:
    cases = _photo_cases()
    if not cases:
        return [pytest.param("none", None, marks=pytest.mark.skip(
            reason="no library photographs installed (pip install -r requirements/test.txt)"))]
    return [pytest.param(name, image, marks=[_KNOWN_LIMIT] if name in KNOWN_TO_PASS else [], id=name)
            for name, image in cases]


@pytest.mark.parametrize("name,image", _photo_params())
def test_photographs_of_other_things_are_not_gradable(name, image):
    report = assess_quality(image)
    assert not report.gradable, (name, report.measures)


def test_the_known_limit_is_small():
    """Most photographs of other things are rejected, even cropped into a round vignette."""
    cases = _photo_cases()
    if not cases:
        pytest.skip("no library photographs installed")
    passed = {name for name, image in cases if assess_quality(image).gradable}
    assert passed == KNOWN_TO_PASS, {"new passes": passed - KNOWN_TO_PASS, "now rejected": KNOWN_TO_PASS - passed}
    assert len(passed) <= len(cases) // 5


def test_plausibility_limits_round_trip_through_the_thresholds():
    t = QualityThresholds(plausibility=PlausibilityLimits(max_noise_sigma=3.0))
    assert QualityThresholds.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="unknown plausibility limit"):
        QualityThresholds.from_dict({"plausibility": {"max_noise": 3.0}})


@pytest.mark.odir_full
def test_all_real_odir_photographs_pass_the_plausibility_checks(full_odir):
    """Opt-in like every full-set test (``-m odir_full`` with ODIR_256_DIR; ~40 s): its own skip
    reason used to fail CI's --strict-skips."""
    root = Path(full_odir)
    files = sorted((root / "images" if (root / "images").is_dir() else root).glob("*.jpg"))
    assert files, f"no *.jpg under {root}"
    implausible = []
    for path in files:
        report = assess_quality(load_rgb(str(path)))
        if any(r.startswith("not a fundus photograph") for r in report.reasons):
            implausible.append((path.name, report.reasons))
    print(f"{len(files) - len(implausible)}/{len(files)} plausible")
    assert len(implausible) <= len(files) // 1000, implausible
