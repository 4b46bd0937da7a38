"""`dms_net_core.errors`: the one rule for an exception's text in a one-line message."""

from __future__ import annotations

import pytest

from dms_net_core.errors import first_line, one_line


@pytest.mark.parametrize(("value", "expected"), [
    (RuntimeError("engine failed\n  at layer 3\n"), "engine failed"),
    (RuntimeError("\n\n  padded first line  \nsecond"), "padded first line"),
    (RuntimeError(""), "RuntimeError"),  # an empty message: the type, not an IndexError
    (ValueError("\n  \n"), "ValueError"),
    ("text\nmore", "text"),
    ("", ""),
])
def test_first_line(value, expected):
    assert first_line(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (RuntimeError("size mismatch for a:\n\tcopying a param\n"), "size mismatch for a: copying a param"),
    (KeyError(), "KeyError"),
    ("  a \n b ", "a b"),
    ("", ""),
])
def test_one_line(value, expected):
    assert one_line(value) == expected


def test_limit_cuts_with_an_ellipsis():
    assert first_line("x" * 10, limit=10) == "x" * 10
    assert first_line("x" * 11, limit=10) == "x" * 7 + "..."
    assert one_line(OSError("y " * 100), limit=20) == "y y y y y y y y y..."
    assert len(one_line(OSError("y " * 100), limit=20)) == 20
