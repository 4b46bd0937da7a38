"""``--strict-skips`` (what .ci/run relies on): a skip for a reason off the allow list fails the
run and is named; allowed skips, the odir_full opt-in and xfails do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test.odir_data import FULL_ODIR_SKIP_REASON, REPO

TESTS = '''
import pytest

def test_passes():
    pass

@pytest.mark.skip(reason="needs a CUDA GPU (none visible to torch)")
def test_gpu():
    pass

@pytest.mark.odir_full
def test_full_set():
    pass

@pytest.mark.xfail(reason="known")
def test_known_bug():
    assert False
'''


def _run(tmp_path: Path, extra_tests: str, *args: str) -> subprocess.CompletedProcess:
    """pytest on a scratch folder that uses this repository's conftest and pytest.ini."""
    folder = tmp_path / "t"
    folder.mkdir(parents=True)
    (folder / "conftest.py").write_text("from test.conftest import *  # noqa: F401,F403 - the suite's hooks\n")
    (folder / "test_scratch.py").write_text(TESTS + extra_tests)
    env = {k: v for k, v in os.environ.items() if k != "ODIR_256_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path), str(folder), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_allowed_skips_pass_and_a_data_skip_fails_naming_the_test(tmp_path):
    ok = _run(tmp_path, "", "--strict-skips", "-rs")
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert "1 passed, 2 skipped, 1 xfailed" in ok.stdout and FULL_ODIR_SKIP_REASON in ok.stdout

    data_skip = '''
def test_reads_shared_data():
    pytest.skip("real ODIR labels not found under ../shared/data/odir5k_256")
'''
    strict = _run(tmp_path / "strict", data_skip, "--strict-skips")
    assert strict.returncode == 1, strict.stdout[-2000:]
    assert "test_reads_shared_data: real ODIR labels not found" in strict.stdout
    lenient = _run(tmp_path / "lenient", data_skip)
    assert lenient.returncode == 0, lenient.stdout[-2000:]
