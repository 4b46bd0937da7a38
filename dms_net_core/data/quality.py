"""Image-quality gate for the diagnosis node: is this fundus photograph gradable?

Cheap on a 2048x1536 camera frame, and sharing its work with the network's input: the
measures run on one `preprocess.EyeFrame`, whose field of view is found on a ~256 px
thumbnail and whose FOV crop is downscaled once, by a `HalvingPyramid` the network's input is
cut from too. The frame-level measures read the thumbnail; the rest read the FOV crop with its
longest side at `QualityThresholds.work_size` (256 px: the scale every limit was set at; for a
256 px model it is exactly the eye the network sees, before padding). Grading a camera frame
costs ~1.5 ms on one core on top of preparing it (`benchmarks/node_overhead.py`). Measures
(all inside the field of view, FOV, found by the same `preprocess.locate_fov` the
preprocessing uses):

- ``fov_found`` / ``fov_fraction``: share of the frame covered by the fundus disc;
- ``min_side``: the original image's short side (a thumbnail cannot be graded);
- ``mean_luma``: mean brightness (0-255) in the FOV (under-/over-exposure);
- ``dark_fraction`` / ``bright_fraction``: FOV pixels clipped near 0 / 255;
- ``laplacian_var``: variance of the Laplacian of the grey FOV view (rim excluded) divided by
  (mean luma/255)^2: the classic focus measure, reported but NOT gated on, because on
  real ODIR photographs it overlaps with blurred ones (hazy cataract fundi score as low
  as 0.05, a sigma=2 px blur of a sharp fundus up to 2.8);
- ``sharpness`` (gated): the share of gradient energy that an extra Gaussian blur
  (sigma 1 px) removes, in [0, 1] (the re-blur idea of Crete-Roffet et al. 2007, "The blur
  effect"), after removing uint8 quantisation noise). A sharp image (vessels, JPEG grain)
  loses much; an already-blurred one loses little. Contrast- and exposure-invariant by
  construction. Computed on the FOV view (resolution-independent), with the FOV mask eroded
  so the disc's rim (an edge that survives any blur) is excluded.

- the plausibility measures of `fundus_plausibility` (is it a fundus photograph at all:
  round field of view on a plain border, pixel noise, tones, colour, vessel-scale detail),
  each with its limit in ``QualityThresholds.plausibility``.

`assess_quality` turns the measures into a `QualityReport`: ``gradable`` is False when any
measure crosses its threshold (each crossing adds a one-line reason naming measure, value
and limit); ``score`` in [0, 1] is the weakest measure's margin (0 at its threshold, 1
comfortably inside), so "barely gradable" is visible to the clinician display.

Default thresholds were set on the real data (measured by test/unit/test_data_quality.py):
5,240 of the 5,241 photographs of the 256 px ODIR-5K development subset are gradable
(99.98 %; the one failure, 2232_right, is a dense cataract with no visible retinal detail,
sharpness 0.00); Gaussian blur of sigma >= 6 px (at 256 px; sigma 4: ~93 %) of real images,
and black, blank/uniform, saturated and tiny images are not gradable; since issue 16 neither
are noise, patterns, screenshots and most photographs of other things (the plausibility
measures; the same 5,240 real photographs pass; and again since issue 14 graded the FOV view
cut from the network input's downscale instead of a separate thumbnail). The sharpness limit
is deliberately lenient: cataract fundi are hazy by nature and must still be diagnosed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from dms_net_core.data.fundus_plausibility import (
    PlausibilityLimits,
    disc_measures,
    frame_measures,
    implausibility_reasons,
)
from dms_net_core.data.preprocess import EyeFrame, channel_max


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the quality gate (a `gradable` image lies inside all of them)."""

    work_size: int = 256  # the FOV crop's long side for the measures (the thumbnail is ~256 px too)
    fov_threshold: int = 15  # same meaning as PreprocessConfig.fov_threshold
    min_side: int = 128  # px of the ORIGINAL image's short side
    min_fov_fraction: float = 0.15
    min_mean_luma: float = 15.0
    max_mean_luma: float = 245.0
    max_dark_fraction: float = 0.7
    max_bright_fraction: float = 0.45
    min_sharpness: float = 0.05
    # Levels at which a measure scores 1.0 (the score ramps linearly from the threshold).
    good_fov_fraction: float = 0.4
    good_sharpness: float = 0.2
    #: is it a fundus photograph at all (see `fundus_plausibility`)
    plausibility: PlausibilityLimits = field(default_factory=PlausibilityLimits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QualityThresholds":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown quality threshold keys {unknown}: remove them or fix the spelling")
        data = dict(data)
        if isinstance(data.get("plausibility"), dict):
            limits = data["plausibility"]
            unknown = sorted(set(limits) - set(PlausibilityLimits.__dataclass_fields__))
            if unknown:
                raise ValueError(f"unknown plausibility limit keys {unknown}: remove them or fix the spelling")
            data["plausibility"] = PlausibilityLimits(**limits)
        return cls(**data)


@dataclass
class QualityReport:
    """Result of the quality gate for one eye."""

    score: float  # [0, 1]: weakest measure's margin; 0 when not gradable
    gradable: bool
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)


def measure_quality(rgb: np.ndarray, thresholds: QualityThresholds = QualityThresholds()) -> dict[str, float]:
    """All quality measures of an RGB uint8 image (plain floats; see module doc)."""
    return measure_eye(EyeFrame(rgb, thresholds.fov_threshold), thresholds)


def measure_eye(frame: EyeFrame, thresholds: QualityThresholds = QualityThresholds()) -> dict[str, float]:
    """`measure_quality` of an `EyeFrame`: the frame-level measures on the thumbnail its field of
    view was found on, the rest on its FOV crop at ``work_size`` (cut from the crop's pyramid,
    which the network's input then reuses)."""
    t = thresholds
    if frame.fov_threshold != t.fov_threshold:
        raise ValueError(f"the frame's FOV threshold {frame.fov_threshold} is not the gate's {t.fov_threshold}: "
                         "build the EyeFrame with QualityThresholds.fov_threshold")
    h, w = frame.rgb.shape[:2]
    m: dict[str, float] = {"min_side": float(min(h, w))}
    if h == 0 or w == 0:
        return m | {"fov_found": 0.0, "fov_fraction": 0.0, "mean_luma": 0.0, "dark_fraction": 1.0,
                    "bright_fraction": 0.0, "sharpness": 0.0, "laplacian_var": 0.0}
    fov = frame.fov
    m["fov_found"] = 0.0 if fov.bbox is None else 1.0
    m["fov_fraction"] = float(fov.fraction)
    if fov.bbox is None:
        m.update(mean_luma=float(cv2.cvtColor(fov.thumbnail, cv2.COLOR_RGB2GRAY).mean()), dark_fraction=1.0,
                 bright_fraction=0.0, sharpness=0.0, laplacian_var=0.0)
        return m
    m.update(frame_measures(fov.thumbnail, fov.thumbnail_bbox, t.fov_threshold))
    view = frame.disc_view(t.work_size)
    m.update(disc_measures(view, t.fov_threshold))
    gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    mask = (channel_max(view) > t.fov_threshold).astype(np.uint8)
    inside = max(cv2.countNonZero(mask), 1)
    m["mean_luma"] = float(cv2.mean(gray, mask=mask)[0])
    m["dark_fraction"] = cv2.countNonZero(cv2.bitwise_and(mask, (gray <= 10).view(np.uint8))) / inside
    m["bright_fraction"] = cv2.countNonZero(cv2.bitwise_and(mask, (gray >= 250).view(np.uint8))) / inside
    # Sharpness on the resolution-independent FOV view, rim excluded, exposure-normalised.
    k = max(3, t.work_size // 16) | 1
    inner = cv2.erode(mask, np.ones((k, k), np.uint8)).astype(bool)
    if inner.sum() < 16:
        m["sharpness"] = m["laplacian_var"] = 0.0
        return m
    g = gray.astype(np.float32)
    luma = max(float(g[inner].mean()), 1.0)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=3)
    m["laplacian_var"] = float(lap[inner].var() / (luma / 255.0) ** 2 / 255.0)
    reblur = cv2.GaussianBlur(g, (0, 0), 1.0)
    e0 = float(_gradient_energy(g)[inner].mean())
    e1 = float(_gradient_energy(reblur)[inner].mean())
    # uint8 quantisation noise (variance 1/12) adds ~2 to the Sobel gradient energy and
    # vanishes under the re-blur; without removing it a dark, blurred fundus looks "sharp".
    e0 -= _QUANTISATION_GRADIENT_ENERGY
    m["sharpness"] = float(np.clip(1.0 - e1 / e0, 0.0, 1.0)) if e0 > 1e-6 else 0.0
    return m


_QUANTISATION_GRADIENT_ENERGY = 2.0  # Sobel(3x3) gx^2+gy^2 of i.i.d. noise with variance 1/12


def _gradient_energy(g: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return gx * gx + gy * gy


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good`` (either direction), clipped."""
    if good == bad:
        return 1.0 if value >= good else 0.0
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


def assess_quality(rgb: np.ndarray, thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Measure and gate one eye's image (see module doc)."""
    return assess_eye(EyeFrame(rgb, thresholds.fov_threshold), thresholds)


def assess_eye(frame: EyeFrame, thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    """`assess_quality` of an `EyeFrame` (the exam pipeline's form: the frame then gives the
    network's input from the same passes)."""
    t = thresholds
    m = measure_eye(frame, t)
    reasons: list[str] = []
    if m["min_side"] < t.min_side:
        reasons.append(f"image too small: short side {m['min_side']:.0f} px < {t.min_side} px "
                       "(send the full-resolution frame)")
    if m["fov_found"] < 1.0:
        reasons.append("no fundus found: the image is black/empty (check camera exposure and alignment)")
    else:
        if m["fov_fraction"] < t.min_fov_fraction:
            reasons.append(f"fundus covers {m['fov_fraction']:.0%} of the frame < {t.min_fov_fraction:.0%} "
                           "(re-centre the eye)")
        if m["mean_luma"] < t.min_mean_luma or m["dark_fraction"] > t.max_dark_fraction:
            reasons.append(f"under-exposed: mean brightness {m['mean_luma']:.0f}, "
                           f"{m['dark_fraction']:.0%} of the fundus black (increase flash)")
        if m["mean_luma"] > t.max_mean_luma or m["bright_fraction"] > t.max_bright_fraction:
            reasons.append(f"over-exposed: mean brightness {m['mean_luma']:.0f}, "
                           f"{m['bright_fraction']:.0%} of the fundus saturated (reduce flash)")
        if m["sharpness"] < t.min_sharpness:
            reasons.append(f"blurred or featureless: sharpness {m['sharpness']:.2f} < {t.min_sharpness} "
                           "(refocus, ask the patient not to move)")
        if "surround_plain" in m:
            reasons.extend(implausibility_reasons(m, t.plausibility))
    gradable = not reasons
    score = 0.0
    if gradable:
        score = min(
            _ramp(m["fov_fraction"], t.min_fov_fraction, t.good_fov_fraction),
            _ramp(m["sharpness"], t.min_sharpness, t.good_sharpness),
            _ramp(m["mean_luma"], t.min_mean_luma, 2 * t.min_mean_luma),
            _ramp(m["mean_luma"], t.max_mean_luma, t.max_mean_luma - 40.0),
            _ramp(m["bright_fraction"], t.max_bright_fraction, 0.0),
            _ramp(m["dark_fraction"], t.max_dark_fraction, 0.0),
        )
        score = max(score, 1e-3)  # gradable never scores exactly 0
    return QualityReport(score=float(score), gradable=gradable, reasons=reasons, measures=m)
