"""The README is an entry point that links into docs/: every relative link in the README and
docs/*.md must reach a file, and every #anchor a heading of that file (GitHub's slug rule), so
a moved section cannot leave a newcomer at a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.MULTILINE)}


def _links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(page.read_text()) if not re.match(r"[a-z]+://", m.group(1))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path):
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link {link} -> {path} does not exist"
        if anchor:
            assert anchor in _anchors(path), (f"{page.name}: link {link}: "
                                              f"no heading with anchor #{anchor} in {path.name}")


def test_readme_is_an_entry_point():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    for page in ("interface", "robot", "training", "replay", "design"):
        assert f"(docs/{page}.md)" in readme, page
