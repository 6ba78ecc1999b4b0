"""The README is the front door: it fits on a screen or two, its code examples run as written and
its links land on existing pages and headings; the docs' examples run too."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the task pages the README's per-modality tables link to
TASK_PAGES = ("vision.md", "dense-prediction.md", "timeseries.md", "superres.md", "pointcloud.md")


def python_blocks(page: Path, section: str | None = None) -> list[str]:
    text = page.read_text()
    if section is not None:
        start = text.index(f"## {section}")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize(
    "page, section",
    [
        ("README.md", "Designing a mixer"),
        ("docs/designing-a-mixer.md", None),
        ("docs/vision.md", None),
    ],
)
def test_examples_run(page, section, monkeypatch):
    from metamixer.core import CHANNEL_MIXERS, TOKEN_MIXERS

    for registry in (TOKEN_MIXERS, CHANNEL_MIXERS):  # the example's mixer stays in this test
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    blocks = python_blocks(ROOT / page, section)
    assert blocks, f"no python example in {page} {section or ''}"
    for code in blocks:
        exec(compile(code, f"{page}:{section or ''}", "exec"), {})


def test_the_readme_fits_on_a_screen_or_two():
    lines = README.read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move the rest into docs/ (at most 300)"


def slugs(heading: str) -> set[str]:
    """The anchors of a heading: as the docs site makes them (Python-Markdown's toc) and as
    GitHub shows the Markdown file; a link must work in both."""
    text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip()
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    site = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
    github = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    return {site, github}


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        both = slugs(heading)
        if len(both) == 1:  # the same anchor on GitHub and in the site (otherwise: none)
            found |= both
    return found


def test_the_readme_links_land_on_existing_pages_and_headings():
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = (README.parent / path) if path else README
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{link} (no heading with that anchor on GitHub and in the docs site)")
    assert not broken, f"README links that do not land: {broken}"
    linked = {Path(link.partition("#")[0]).name for link in local}
    assert set(TASK_PAGES) <= linked, (
        f"task pages the README does not link: {set(TASK_PAGES) - linked}"
    )


def test_a_link_to_a_missing_heading_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Image classification: FFNet-1…4\n\n```\n## Not a heading\n```\n")
    assert anchors(page) == {"page", "image-classification-ffnet-14"}
    assert slugs("Deployment and `speed`") == {"deployment-and-speed"}
    assert "not-a-heading" not in anchors(page)
