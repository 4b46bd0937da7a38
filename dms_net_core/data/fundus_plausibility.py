"""Is this a fundus photograph at all? Plausibility measures for the quality gate.

The gradability measures in `quality` (exposure, field of view, sharpness) were made to
tell a good fundus photograph from a bad one; they say nothing about whether the image is
a fundus photograph. Uniform noise, for one, is "sharp", well exposed and fills the frame,
and passed the gate with score 0.999 (issue 16). The measures here describe what every
colour fundus photograph shares and most other images lack, each cheap at the gate's
256 px scale: the first two on the thumbnail the field of view was found on (`frame_measures`),
the rest on the field of view's crop at 256 px, the view cut from the network input's own
downscale passes (`disc_measures`, `preprocess.EyeFrame`):

- ``fov_aspect``: long over short side of the field of view's bounding box: a fundus disc
  is round (at most clipped at the top and bottom by the sensor).
- ``surround_plain``: the share of the frame outside the fundus disc (the circle spanned by
  the field of view's bounding box) that is plain black or plain white. A fundus camera
  images a round field of view on a black (a few ODIR images: white) border; a photograph
  of anything else, a screenshot or a noise pattern fills the frame.
- ``noise_sigma``: the pixel noise level inside the disc in grey levels, by Immerkaer's
  fast estimator ("Fast noise variance estimation", CVIU 1996: the mean absolute response
  of a Laplacian-difference mask that cancels image structure up to second order). Fundus
  photographs are smooth at pixel scale; noise patterns are not.
- ``top2_share`` / ``grey_entropy``: the share of the disc's pixels on its two most frequent
  grey levels and the entropy of its grey histogram (bits). Graphics, text, checkerboards
  and flat fills have a handful of tones; a photograph has a continuum.
- ``blue_share`` / ``blue_chromaticity``: the share of disc pixels whose blue exceeds both
  red and green by more than 8 levels, and the mean ``B / (R + G + B)``. The retina
  reflects little blue: blue is never the dominant colour of a fundus photograph (sky,
  water and screens often are). Grey images pass (chromaticity 1/3): the node accepts
  monochrome fundus cameras.
- ``detail``: the standard deviation of a band-pass (Gaussian sigma 1 px minus sigma 4 px)
  of the disc at 256 px. Vessels give a fundus some detail; flat fills and gradients have
  none, and photographs of scenes, faces, objects and text far more than any fundus.
- ``detail_spread``: the coefficient of variation of the local band-pass energy (averaged
  over 17 x 17 px) inside the disc. A fundus concentrates its detail on vessels and the optic
  disc around a smooth background; a texture that fills the disc evenly (noise of any
  grain, gravel, grass, brick, a checkerboard) spreads it evenly.

Every limit in `PlausibilityLimits` was set on the 5,241 real photographs of the 256 px
ODIR-5K development subset with a margin beyond the most extreme real value (numbers in
the field comments; measured with ``python benchmarks/fundus_gate.py``). What this cannot
reject, and why, is listed in the README ("Quality gate: what is a fundus photograph").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dms_net_core.data.preprocess import channel_max

#: Immerkaer's mask: zero response to constant, linear and quadratic image structure.
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_NOISE_SCALE = float(np.sqrt(np.pi / 2.0) / 6.0)


@dataclass(frozen=True)
class PlausibilityLimits:
    """Bounds a fundus photograph lies within (real ODIR-256 range in the comments)."""

    max_fov_aspect: float = 1.8  # real: max 1.54 (long / short side of the field of view's box)
    min_surround_plain: float = 0.5  # real: min 0.62
    max_noise_sigma: float = 2.5  # real: max 1.79, 99.9 % 1.30 grey levels
    max_top2_share: float = 0.6  # real: max 0.41 (the cartoon `synthetic_fundus`: 0.51)
    min_grey_entropy: float = 2.5  # real: min 3.06 bits
    max_blue_share: float = 0.3  # real: max 0.22, 99.9 % 0.05
    max_blue_chromaticity: float = 0.36  # real: max 0.335 (grey: 1/3)
    min_detail: float = 0.2  # real: min 0.27 (a dense cataract)
    max_detail: float = 12.5  # real: max 11.4, 99.9 % 8.4
    min_detail_spread: float = 0.4  # real: min 0.43, 0.1 % 0.58; white or fine-grained noise: 0.2-0.33


def frame_measures(thumbnail: np.ndarray, bbox: tuple[int, int, int, int], fov_threshold: int) -> dict[str, float]:
    """``fov_aspect`` and ``surround_plain`` of a frame, from the decimated ``thumbnail`` the
    field of view was found on and the field of view's box ``bbox`` in it (`preprocess.locate_fov`)."""
    h, w = thumbnail.shape[:2]
    x0, y0, x1, y1 = bbox
    fov_aspect = max(x1 - x0, y1 - y0) / max(1, min(x1 - x0, y1 - y0))
    cx, cy, radius = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0, max(x1 - x0, y1 - y0) / 2.0
    yy, xx = np.ogrid[0:h, 0:w]
    dist2 = ((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32)
    brightest = channel_max(thumbnail)
    darkest = cv2.min(cv2.min(thumbnail[..., 0], thumbnail[..., 1]), thumbnail[..., 2])
    surround = dist2 > (radius * 1.04) ** 2
    plain = (brightest <= fov_threshold) | (darkest >= 235)
    # A disc filling (nearly) the whole frame leaves no surround to judge: count it plain.
    surround_plain = float(plain[surround].mean()) if surround.sum() >= 0.02 * h * w else 1.0
    return {"fov_aspect": float(fov_aspect), "surround_plain": surround_plain}


def disc_measures(view: np.ndarray, fov_threshold: int) -> dict[str, float]:
    """The texture, tone and colour measures of the module docstring, on ``view``: the field of
    view's crop with its longest side at the gate's working size (`preprocess.EyeFrame.disc_view`),
    so they do not depend on the camera's resolution or on how much of the frame the disc fills.
    The disc is the circle spanned by the crop's longest side, where the frame is not black."""
    h, w = view.shape[:2]
    size = max(h, w)
    radius = size / 2.0
    yy, xx = np.ogrid[0:h, 0:w]
    dist2 = ((xx - (w - 1) / 2.0) ** 2 + (yy - (h - 1) / 2.0) ** 2).astype(np.float32)
    disc = ((dist2 <= (radius * 0.96) ** 2) & (channel_max(view) > fov_threshold)).astype(np.uint8)
    near_rim = np.ones((5, 5), np.uint8)
    mask = cv2.erode(disc, near_rim)
    if cv2.countNonZero(mask) < 64:
        return {"noise_sigma": 0.0, "top2_share": 1.0, "grey_entropy": 0.0, "blue_share": 0.0, "blue_chromaticity": 0.0,
                "detail": 0.0, "detail_spread": 0.0}

    # Masked OpenCV reductions: NumPy boolean indexing of the disc cost ~1 ms an eye.
    r, g, b = cv2.split(view)
    bluest = cv2.compare(b, cv2.add(cv2.max(r, g), 8), cv2.CMP_GT)
    blue_share = cv2.countNonZero(cv2.bitwise_and(bluest, bluest, mask=mask)) / float(cv2.countNonZero(mask))
    planes = [p.astype(np.float32) for p in (r, g, b)]
    blue_chromaticity = cv2.mean(cv2.divide(planes[2], planes[0] + planes[1] + planes[2] + 1e-3), mask=mask)[0]

    grey_u8 = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    hist = cv2.calcHist([grey_u8], [0], mask, [256], [0, 256]).ravel().astype(np.float64)
    hist /= hist.sum()
    top2_share = float(np.sort(hist)[-2:].sum())
    nz = hist[hist > 0]
    grey_entropy = float(-(nz * np.log2(nz)).sum())

    # Measured at this common scale, not at the camera's: Immerkaer's mask reads the vessels of
    # a small disc (150 px) as noise. Upsampling a small disc smooths its noise;
    # `detail_spread` catches noise of any amplitude anyway.
    noise_sigma = _NOISE_SCALE * cv2.mean(np.abs(cv2.filter2D(grey_u8.astype(np.float32), -1, _NOISE_MASK)),
                                          mask=mask)[0]

    # The band-pass must not see the disc's rim (an edge every photograph has): outside the
    # disc the grey is set to the disc's mean, and the texture is judged on the disc's
    # inner ~85 % (the reach of the filters below).
    grey = np.full((h, w), cv2.mean(grey_u8, mask=disc)[0], np.float32)
    cv2.copyTo(grey_u8.astype(np.float32), disc, grey)
    inner = cv2.erode(disc, np.ones((size // 12 | 1,) * 2, np.uint8))
    if cv2.countNonZero(inner) < 64:
        inner = mask
    band = cv2.GaussianBlur(grey, (0, 0), 1.0) - cv2.GaussianBlur(grey, (0, 0), 4.0)
    detail = float(cv2.meanStdDev(band, mask=inner)[1][0, 0])
    # local band-pass energy over 17 x 17 px (a box filter: a Gaussian of that reach cost 1 ms)
    energy_mean, energy_std = cv2.meanStdDev(cv2.blur(band * band, (17, 17)), mask=inner)
    detail_spread = float(energy_std[0, 0] / energy_mean[0, 0]) if energy_mean[0, 0] > 1e-6 else 0.0
    return {"noise_sigma": noise_sigma, "top2_share": top2_share, "grey_entropy": grey_entropy,
            "blue_share": blue_share, "blue_chromaticity": blue_chromaticity, "detail": detail,
            "detail_spread": detail_spread}


def implausibility_reasons(m: dict[str, float], limits: PlausibilityLimits = PlausibilityLimits()) -> list[str]:
    """One line per measure outside its limit; empty when the image is plausibly a fundus."""
    lim = limits
    fix = "not a fundus photograph? check the camera topic"
    out: list[str] = []
    if m["fov_aspect"] > lim.max_fov_aspect:
        out.append(f"not a fundus photograph: the field of view is {m['fov_aspect']:.1f} times wider than high "
                   f"(> {lim.max_fov_aspect}; a fundus disc is round); {fix}")
    if m["surround_plain"] < lim.min_surround_plain:
        out.append(f"not a fundus photograph: no round field of view on a plain border "
                   f"({m['surround_plain']:.0%} of the border plain < {lim.min_surround_plain:.0%}); {fix}")
    if m["noise_sigma"] > lim.max_noise_sigma:
        out.append(f"not a fundus photograph: pixel noise {m['noise_sigma']:.1f} grey levels > {lim.max_noise_sigma} "
                   f"(a noise pattern or a failing sensor); {fix}")
    if m["top2_share"] > lim.max_top2_share or m["grey_entropy"] < lim.min_grey_entropy:
        out.append(f"not a fundus photograph: {m['top2_share']:.0%} of the disc on two grey levels, "
                   f"{m['grey_entropy']:.1f} bits of tone (a graphic, text or pattern); {fix}")
    if m["blue_share"] > lim.max_blue_share or m["blue_chromaticity"] > lim.max_blue_chromaticity:
        out.append(f"not a fundus photograph: blue-dominant colours ({m['blue_share']:.0%} of the disc blue, "
                   f"blue chromaticity {m['blue_chromaticity']:.2f} > {lim.max_blue_chromaticity}); {fix}")
    if m["detail"] < lim.min_detail:
        out.append(f"blurred or featureless: no vessel-scale detail ({m['detail']:.2f} < {lim.min_detail}); "
                   "refocus, or check the camera topic")
    elif m["detail"] > lim.max_detail:
        out.append("not a fundus photograph: far more fine detail than a retina "
                   f"({m['detail']:.1f} > {lim.max_detail}; a scene, face, object or text); {fix}")
    if m["detail"] >= lim.min_detail and m["detail_spread"] < lim.min_detail_spread:
        out.append(f"not a fundus photograph: an even texture fills the disc (detail spread {m['detail_spread']:.2f} "
                   f"< {lim.min_detail_spread}; noise, gravel, a pattern); {fix}")
    return out
