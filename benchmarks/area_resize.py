"""Camera FOV crop -> network size: OpenCV INTER_AREA alone vs `downscale` (`HalvingPyramid`; one core).

    python benchmarks/area_resize.py

A fundus camera's FOV crop is ~1400-1600 px; INTER_AREA is fast only for integer ratios (vectorised at 2x), so
the table times both an exact 6x crop (1536 px) and typical ones, with the mean absolute
difference to INTER_AREA's output (uint8 levels).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from dms_net_core.data.preprocess import downscale, load_rgb

REPO = Path(__file__).resolve().parents[1]


def _median_ms(fn, iterations: int) -> float:
    fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    photo = load_rgb(str(REPO / "demo" / "samples" / "images" / "556_left.jpg"))
    dsize = (args.size, args.size)
    print("| crop px | INTER_AREA ms | downscale ms | speed-up | mean abs diff |\n|---:|---:|---:|---:|---:|")
    for side in (1536, 1490, 1411, 1600):
        crop = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        ref = cv2.resize(crop, dsize, interpolation=cv2.INTER_AREA)
        out = downscale(crop, dsize)
        diff = float(np.abs(out.astype(np.float32) - ref.astype(np.float32)).mean())
        t_ref = _median_ms(lambda: cv2.resize(crop, dsize, interpolation=cv2.INTER_AREA), args.iterations)
        t_new = _median_ms(lambda: downscale(crop, dsize), args.iterations)
        print(f"| {side} | {t_ref:.2f} | {t_new:.2f} | {t_ref / t_new:.2f}x | {diff:.3f} |")


if __name__ == "__main__":
    main()
