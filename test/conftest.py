"""Shared fixtures for the ROS tests (test/ros/): one tiny model bundle per session and a
per-test ROS domain/namespace so concurrent runs on one machine never see each other."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DOMAINS = itertools.count(random.Random(os.getpid()).randrange(1, 60))
_NAMES = itertools.count()


def export_tiny_bundle(out_dir: Path) -> Path:
    """DMSNetConfig.tiny() with seeded weights, head scaled x40 so probabilities spread over
    (0, 1) (a random tiny head gives ~0.5 everywhere, which would make equality checks weak)."""
    import numpy as np
    import torch

    from dms_net_core.bundle import export_bundle
    from dms_net_core.data.preprocess import PreprocessConfig
    from dms_net_core.model import build_model
    from dms_net_core.model.config import DMSNetConfig

    torch.manual_seed(0)
    cfg = DMSNetConfig.tiny()
    model = build_model(cfg).eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(40.0)
    thresholds = np.linspace(0.3, 0.65, 8, dtype=np.float32)
    export_bundle(model, cfg, PreprocessConfig(image_size=cfg.image_size), out_dir, thresholds=thresholds, name="tiny-ros-test")
    return out_dir


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


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
