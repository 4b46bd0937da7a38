"""``pytest --strict-skips``: a skip is a failure unless its reason is on an allow list.

A test that needs something outside the clone tends to skip rather than fail when it is
missing, and a skip is easy to overlook in a long summary. CI runs the suite in a copy of the
repository with nothing beside it and this plugin on, so such a test fails the build instead.
The allow list (in ``test/conftest.py``) names what a CI machine cannot have: a CUDA GPU,
``launch_ros``, and the opt-in full ODIR-5K set.
"""

from __future__ import annotations

import pytest


class StrictSkips:
    """Collects skips whose reason matches no allowed substring; turns a passing run into a failed one."""

    def __init__(self, allowed_reasons: tuple[str, ...]) -> None:
        self.allowed_reasons = allowed_reasons
        self.unexpected: list[tuple[str, str]] = []

    def _note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")  # pytest.skip() inside a test adds it
        if not any(allowed in reason for allowed in self.allowed_reasons):
            self.unexpected.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.unexpected:
            terminalreporter.section("--strict-skips: skipped for a reason this run must not have", red=True)
            for nodeid, reason in self.unexpected:
                terminalreporter.line(f"{nodeid}: {reason}")
