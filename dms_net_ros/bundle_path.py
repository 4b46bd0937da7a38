"""Where a ``bundle`` parameter points: the working directory first, then the package.

``config/diagnose.yaml`` says ``bundle: models/demo``. Read against the working directory
only, that works from the repository root and nowhere else, so an installed package would
fail ``ros2 launch dms_net_ros diagnose.launch.py`` run from any other directory. CMake
installs the demo model to ``share/dms_net_ros/models/demo``; a relative path that is not a
directory under the working directory is therefore looked up under the package's share
directory, and the node logs which one it used (a model silently taken from an unexpected
place would be worse than a failure).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "dms_net_ros"
FROM_ABSOLUTE = "absolute path"
FROM_CWD = "relative to the working directory"
FROM_SHARE = "relative to the package share directory"


class BundleNotFoundError(FileNotFoundError):
    """A relative bundle path found in neither place; the message names both and the fix."""


def package_share_dir(package: str = PACKAGE) -> Path | None:
    """The installed package's share directory, or None when it is not installed (ament index)."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError):
        return None


def resolve_bundle_path(bundle: str, cwd: Path, share_dir: Path | None) -> tuple[Path, str]:
    """``(path, where it was found)`` for a ``bundle`` parameter value.

    An absolute path is returned as is (the bundle loader reports a missing one). A relative
    one is tried under ``cwd``, then under ``share_dir``; found in neither, it raises
    `BundleNotFoundError`.
    """
    path = Path(bundle).expanduser()
    if path.is_absolute():
        return path, FROM_ABSOLUTE
    in_cwd = cwd / path
    if in_cwd.is_dir():
        return in_cwd, FROM_CWD
    if share_dir is not None and (share_dir / path).is_dir():
        return share_dir / path, FROM_SHARE
    looked = f"{in_cwd}" + (f" or {share_dir / path}" if share_dir is not None
                            else " (package share directory not found)")
    raise BundleNotFoundError(
        f"model bundle {bundle} is not a directory (looked in {looked}): "
        "pass an absolute bundle path to a folder written by dms-net-export"
    )
