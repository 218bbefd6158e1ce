"""The README is a front door within its size budget, and no link in it or in docs/ is broken."""

from __future__ import annotations

import re
from pathlib import Path
from conftest import REPO

README_BUDGET = 12 * 1024  # bytes
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def test_the_readme_fits_its_budget():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_BUDGET, f"README.md is {size:,} bytes, over the {README_BUDGET:,} budget"


def test_the_readme_setup_is_two_lines_naming_nothing_outside_the_clone():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", setup, re.DOTALL).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[1] == "python -m pytest -q"
    assert "saliency pipeline" in lines[0]
    assert not any("../" in line or line.split()[0].startswith("/") for line in lines)


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            destination = (page.parent / path_part).resolve() if path_part else page
            if not destination.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_no_commit_hashes_in_the_readme_or_docs():
    # History lives in git log: a page gives the latest figure, its command and its machine.
    hashes = []
    for page in _pages():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for match in re.finditer(r"\b(?:at|commit)\s+([0-9a-f]{7,40})\b", text):
            hashes.append(f"{page.relative_to(REPO)}: {match.group(0)}")
    assert not hashes, "\n".join(hashes)
