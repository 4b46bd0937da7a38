"""Where the development data lives, defined once for the trainer, the tools and the tests.

The checkout sits beside ``shared/`` (``<repo>/../shared/data/odir5k_256``); set
``ODIR_256_DIR`` to use a copy elsewhere (e.g. on a GPU machine).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_odir_dir() -> Path:
    """The ODIR-5K 256 px development subset (labels.csv + images/)."""
    env = os.environ.get("ODIR_256_DIR")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT.parent / "shared" / "data" / "odir5k_256", REPO_ROOT / ".device_data" / "odir5k_256"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "data" / "odir5k_256"
