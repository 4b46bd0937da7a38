"""The repository's ``test`` package must not hide CPython's (``test.support``): see test/__init__.py."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB_TEST = Path(sysconfig.get_paths()["stdlib"]) / "test"


@pytest.mark.skipif(not (STDLIB_TEST / "support").is_dir(), reason="this Python ships without its test package")
def test_ours_come_first_and_cpythons_still_resolve():
    probe = ("import test, test.odir_data, test.support; "
             "print(test.__file__); print(test.odir_data.__file__); print(test.support.__file__)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert Path(out[0]).parent == REPO / "test"
    assert Path(out[1]) == REPO / "test" / "odir_data.py"
    assert Path(out[2]).resolve().is_relative_to(STDLIB_TEST.resolve())
