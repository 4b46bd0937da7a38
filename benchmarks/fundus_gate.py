"""How the quality gate splits real fundus photographs from everything else.

Runs `assess_quality` on every image of a folder of real fundus photographs (default: the
256 px ODIR-5K development subset, ``$ODIR_256_DIR`` or ``../shared/data/odir5k_256/images``)
and on the non-fundus catalogue of ``test/fakes/non_fundus.py`` (generated noise, patterns,
screenshots, a scene, and real photographs of other things, each also cropped into a round
vignette). Prints the pass rate with and without the plausibility checks
(`dms_net_core.data.fundus_plausibility`), the real range of every plausibility measure
against its limit, and which non-fundus images still pass.

    source scripts/env.sh
    python benchmarks/fundus_gate.py [--images DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("ODIR_256_DIR", str(REPO.parent / "shared" / "data" / "odir5k_256"))
    p.add_argument("--images", default=str(Path(default) / "images") if not default.endswith("images") else default)
    p.add_argument("--limit", type=int, default=None, help="only the first N real images")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from dms_net_core.data.fundus_plausibility import PlausibilityLimits, implausibility_reasons
    from dms_net_core.data.preprocess import load_rgb
    from dms_net_core.data.quality import assess_quality
    from test.fakes.non_fundus import in_round_vignette, library_fundus, library_photographs, synthetic_non_fundus

    files = sorted(Path(args.images).glob("*.jpg"))[: args.limit]
    if not files:
        print(f"no *.jpg under {args.images}: pass --images DIR (real fundus photographs)")
        return 2
    measures, failed, failed_before = [], [], []
    start = time.perf_counter()
    for path in files:
        report = assess_quality(load_rgb(str(path)))
        measures.append(report.measures)
        if not report.gradable:
            failed.append((path.name, report.reasons[0]))
            plausibility = (set(implausibility_reasons(report.measures)) if "surround_plain" in report.measures
                            else set())
            if any(r not in plausibility for r in report.reasons):
                failed_before.append(path.name)
    per_image = (time.perf_counter() - start) / len(files) * 1e3
    n = len(files)
    print(f"real fundus photographs: {args.images} ({n} images, {per_image:.1f} ms each with decoding, "
          f"{os.cpu_count()} CPUs)")
    print("| gate | gradable | rate |\n|---|---:|---:|")
    print(f"| without the plausibility checks | {n - len(failed_before)} | {(n - len(failed_before)) / n:.4%} |")
    print(f"| with them (shipped) | {n - len(failed)} | {(n - len(failed)) / n:.4%} |")
    for name, reason in failed:
        print(f"  not gradable: {name}: {reason}")

    limits = PlausibilityLimits()
    print("\n| measure | real min | 0.1 % | 99.9 % | real max | limit |\n|---|---:|---:|---:|---:|---:|")
    for f in fields(limits):
        key = f.name.split("_", 1)[1]
        values = np.array([m[key] for m in measures if key in m])
        q = np.percentile(values, [0, 0.1, 99.9, 100])
        print(f"| {key} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {q[3]:.3f} | "
              f"{f.name.split('_')[0]} {getattr(limits, f.name)} |")

    catalogue = synthetic_non_fundus()
    photos = library_photographs()
    catalogue.update(photos)
    catalogue.update({f"{name} in a round vignette": in_round_vignette(rgb) for name, rgb in photos.items()})
    passed = []
    print(f"\nnon-fundus images: {len(catalogue)}")
    for name, rgb in catalogue.items():
        report = assess_quality(rgb)
        if report.gradable:
            passed.append(name)
    print(f"| rejected | passed |\n|---:|---:|\n| {len(catalogue) - len(passed)} | {len(passed)} |")
    for name in passed:
        print(f"  still gradable: {name}")
    retina = library_fundus()
    if retina is not None:
        print("scikit-image retina.jpg (a real fundus from another camera): "
              f"gradable={assess_quality(retina).gradable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
