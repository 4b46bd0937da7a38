"""Where the node finds a relative ``bundle`` (dms_net_ros/bundle_path.py): the working
directory first, then the installed package's share directory, saying which."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms_net_ros.bundle_path import (
    FROM_ABSOLUTE,
    FROM_CWD,
    FROM_SHARE,
    BundleNotFoundError,
    resolve_bundle_path,
)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    cwd, share = tmp_path / "cwd", tmp_path / "share"
    (share / "models" / "demo").mkdir(parents=True)
    cwd.mkdir()
    return cwd, share


def test_relative_bundle_missing_in_cwd_comes_from_the_share(dirs):
    cwd, share = dirs
    assert resolve_bundle_path("models/demo", cwd, share) == (share / "models" / "demo", FROM_SHARE)


def test_working_directory_wins_over_the_share(dirs):
    cwd, share = dirs
    (cwd / "models" / "demo").mkdir(parents=True)
    assert resolve_bundle_path("models/demo", cwd, share) == (cwd / "models" / "demo", FROM_CWD)


def test_absolute_path_is_taken_as_given(dirs, tmp_path):
    cwd, share = dirs
    assert resolve_bundle_path(str(tmp_path / "elsewhere"), cwd, share) == (tmp_path / "elsewhere", FROM_ABSOLUTE)


def test_found_nowhere_names_both_places_and_the_fix(dirs):
    cwd, share = dirs
    with pytest.raises(BundleNotFoundError) as info:
        resolve_bundle_path("models/other", cwd, share)
    text = str(info.value)
    assert "\n" not in text and str(cwd / "models" / "other") in text and str(share / "models" / "other") in text
    assert "dms-net-export" in text


def test_without_an_installed_package_only_the_working_directory_counts(dirs):
    cwd, _ = dirs
    with pytest.raises(BundleNotFoundError, match="package share directory not found"):
        resolve_bundle_path("models/demo", cwd, None)
