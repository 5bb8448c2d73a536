"""The README and docs/: every link to a file of the repository, or to a heading, leads
somewhere, and a new reader meets `make demo` and `make test` first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", page.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not linked
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_local_link_resolves(page: Path) -> None:
    links = _local_links(page)
    for target in links:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} -> no such file"
        if anchor:
            assert resolved.suffix == ".md", f"{page.name}: {target} -> anchor into a non-page"
            assert anchor in _anchors(resolved), f"{page.name}: {target} -> no such heading"


def test_every_docs_page_is_one_click_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _local_links(ROOT / "README.md")}
    assert {p.resolve() for p in PAGES[1:]} <= linked


def test_the_readme_is_short_and_starts_with_demo_then_test() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    commands = re.findall(r"(?m)^make (\w[\w-]*)", readme)
    assert commands[:2] == ["demo", "test"]
