"""The documentation stands on its own: every relative link resolves, nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Markdown links and images: [text](target) and ![alt](target), an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
#: Spelt in two pieces so this file does not mention it.
SHARED = ".." + "/shared"


def links(document: Path) -> list[str]:
    """The link targets of a Markdown document, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", document.read_text()))


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", document.read_text()), re.MULTILINE)
    return {slug(heading) for heading in headings}


def test_the_link_pattern_finds_links_images_and_anchors_but_not_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('[a](b.md) ![c](img/d.png "t") [e](#f-g)\n```\n[h](i.md)\n```\n## F: g!\n')
    assert links(page) == ["b.md", "img/d.png", "#f-g"]
    assert anchors(page) == {"f-g"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading_of_the_repository(document: Path) -> None:
    broken = []
    for target in links(document):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            if parts.hostname in {"localhost", "127.0.0.1", "0.0.0.0"}:
                broken.append(f"{target}: not a public site")
            continue
        path = (document.parent / parts.path).resolve() if parts.path else document
        if not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif parts.fragment and path.suffix == ".md" and parts.fragment not in anchors(path):
            broken.append(f"{target}: no such heading in {path.relative_to(ROOT)}")
    assert broken == []


def test_nothing_in_the_repository_refers_to_the_shared_directory_outside_it() -> None:
    texts = [*DOCUMENTS, ROOT / "pyproject.toml", ROOT / "Makefile"]
    for tree in ("src", "tests", "bench"):
        texts += [path for path in (ROOT / tree).rglob("*") if path.suffix in {".py", ".md", ".html", ".js", ".toml"}]
    mentions = [str(path.relative_to(ROOT)) for path in texts if SHARED in path.read_text(errors="replace")]
    assert mentions == []
