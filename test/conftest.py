"""Suite-wide test policy and the ROS tests' shared fixtures.

- Data: tests read the real ODIR-5K subset in ``test/data/odir5k_subset`` (``test/odir_data.py``).
  Tests marked ``odir_full`` need the full 2,762-patient 256 px set and are opt-in: they run
  when ``ODIR_256_DIR`` names it and are skipped with one stated reason when it is unset.
- ``--strict-skips`` (CI): the run fails when any test is skipped for a reason other than the
  machine lacking something it cannot have here (a CUDA GPU, ``launch_ros``) or the full set
  not being requested, so a test that quietly starts depending on data outside the clone
  fails CI instead of skipping.
- ROS (test/ros/): one tiny model bundle per session and a per-test ROS domain/namespace so
  concurrent runs on one machine never see each other.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

from test.odir_data import FULL_ODIR_ENV, FULL_ODIR_SKIP_REASON, check_full_odir_dir, full_odir_dir
from test.strict_skips import StrictSkips

REPO = Path(__file__).resolve().parents[1]
#: skip reasons --strict-skips accepts (substrings): what this machine cannot have, and the opt-in
ALLOWED_SKIP_REASONS = ("needs a CUDA GPU", "launch_ros", FULL_ODIR_SKIP_REASON)
_DOMAINS = itertools.count(random.Random(os.getpid()).randrange(1, 60))
_NAMES = itertools.count()


def export_ros_tiny_bundle(out_dir: Path, **config_overrides: object) -> Path:
    """The ROS tests' tiny bundle (`test.fakes.tiny_bundle.export_tiny_bundle`), head scaled x40
    so probabilities spread over (0, 1)."""
    from test.fakes.tiny_bundle import export_tiny_bundle

    return export_tiny_bundle(out_dir, name="tiny-ros-test", head_scale=40.0, **config_overrides)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_ros_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> int:
    """A fresh ROS_DOMAIN_ID (1..101) with discovery kept on this machine."""
    domain = (next(_DOMAINS) % 100) + 1
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def ros_namespace() -> str:
    """A namespace unique to this test process and test (topics are relative)."""
    return f"/dmstest_{os.getpid()}_{next(_NAMES)}"



# ----------------------------------------------------------------------------- data and skip policy
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--strict-skips", action="store_true", default=False,
                     help="fail the run if a test is skipped for a reason other than: "
                     f"{'; '.join(ALLOWED_SKIP_REASONS)}")


def pytest_configure(config: pytest.Config) -> None:
    full = full_odir_dir()
    if full is not None:
        try:
            check_full_odir_dir(full)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    if config.getoption("--strict-skips"):
        config.pluginmanager.register(StrictSkips(ALLOWED_SKIP_REASONS), "strict-skips")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``odir_full`` tests are skipped, naming the variable to set, unless ODIR_256_DIR names the set."""
    if full_odir_dir() is not None:
        return
    skip = pytest.mark.skip(reason=FULL_ODIR_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("odir_full"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def full_odir() -> Path:
    """The full ODIR-5K 256 px folder named by ODIR_256_DIR (only ``odir_full`` tests use it)."""
    path = full_odir_dir()
    assert path is not None, f"mark the test odir_full: it needs {FULL_ODIR_ENV}"
    return path
