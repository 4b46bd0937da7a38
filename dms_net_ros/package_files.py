"""Files the package ships beside its code (``config/``), found from a checkout or an install.

In a source checkout they sit next to the ``dms_net_ros`` package directory (the repository
root, recognised by its ``package.xml``); once installed (colcon, apt) the package directory
lies in ``site-packages`` and CMake installs ``config/`` to the package's share directory
(ament index). A path computed as "two directories above this module" is right only in the
first case, so lookups go through `package_file`.
"""

from __future__ import annotations

from pathlib import Path

from dms_net_ros.bundle_path import package_share_dir

#: The directory holding the ``dms_net_ros`` package: the repository root of a checkout, or
#: ``site-packages`` of an install (what a child process needs on PYTHONPATH to import it).
IMPORT_ROOT = Path(__file__).resolve().parents[1]


def source_checkout() -> Path | None:
    """The repository this package runs from, or None when it runs installed."""
    return IMPORT_ROOT if (IMPORT_ROOT / "package.xml").is_file() else None


def package_file(relative: str, share_dir: Path | None = None) -> Path | None:
    """A shipped file, e.g. ``config/fastdds_large_images.xml``: the checkout's copy when this
    package runs from one, else the installed share directory's (``share_dir`` overrides the
    ament lookup); None when neither has it."""
    checkout = source_checkout()
    if checkout is not None and (checkout / relative).is_file():
        return checkout / relative
    share = share_dir if share_dir is not None else package_share_dir()
    if share is not None and (share / relative).is_file():
        return share / relative
    return None
