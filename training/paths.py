"""Where the training data is looked for when a tool is not told, defined once.

The full ODIR-5K 256 px set (``labels.csv`` + ``images/``) is not part of the repository.
``$ODIR_256_DIR`` names it; unset, the tools fall back to the development layout, a
``shared/`` folder beside the checkout (``<repo>/../shared/data/odir5k_256``), a path OUTSIDE
the repository, which every tool using this default says in its ``--help``
(`DEFAULT_ODIR_HELP`). Pass ``--labels`` (and ``--images-dir`` for the official sheet) to use
anything else. The tests never use this default: they read the subset shipped in
``test/data/odir5k_subset`` and opt in to the full set through ``ODIR_256_DIR`` only.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ODIR_DIR_ENV = "ODIR_256_DIR"
#: the fallback beside the checkout (outside the repository)
SHARED_ODIR_DIR = REPO_ROOT.parent / "shared" / "data" / "odir5k_256"
#: what a tool's --help says about the default (keep in step with default_odir_dir)
DEFAULT_ODIR_HELP = f"${ODIR_DIR_ENV}, else ../shared/data/odir5k_256 beside the checkout (outside the repository)"


def default_odir_dir() -> Path:
    """``$ODIR_256_DIR`` if set, else ``<repo>/../shared/data/odir5k_256`` (which may not exist:
    the label loader then fails in one line naming the path)."""
    env = os.environ.get(ODIR_DIR_ENV, "").strip()
    return Path(env) if env else SHARED_ODIR_DIR
