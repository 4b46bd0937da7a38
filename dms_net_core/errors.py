"""Exception text for one-line messages: the rule every error line, log line and report uses.

Messages in this project are one line naming cause and fix; the text of a library's exception
(ONNX Runtime, torch, TensorRT, rosbags) can span many lines, or be empty. `first_line` takes
its first line, `one_line` all of it with the line breaks folded; both name the exception's type
when its message is empty, and cut to ``limit`` characters with an ellipsis.
"""

from __future__ import annotations


def _text(value: BaseException | str) -> str:
    return str(value) if isinstance(value, BaseException) else value


def _fallback(value: BaseException | str) -> str:
    return type(value).__name__ if isinstance(value, BaseException) else ""


def _shorten(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def first_line(value: BaseException | str, limit: int | None = None) -> str:
    """The first non-blank line of an exception's message or of a text, stripped; for an empty
    message the exception's type name (``""`` for an empty text), never an IndexError."""
    lines = [line.strip() for line in _text(value).splitlines() if line.strip()]
    return _shorten(lines[0] if lines else _fallback(value), limit)


def one_line(value: BaseException | str, limit: int | None = None) -> str:
    """The whole message on one line (every run of whitespace, line breaks included, one space);
    for an empty message the exception's type name (``""`` for an empty text)."""
    return _shorten(" ".join(_text(value).split()) or _fallback(value), limit)
