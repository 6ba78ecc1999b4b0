"""The documentation site builds in strict mode, and strict mode fails on a broken link, a missing
anchor, a missing figure or a page left out of the navigation (what ``make docs`` relies on)."""

import logging
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> None:
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    mkdocs_build(load_config(config_file=str(config), site_dir=str(site), strict=True))


def test_the_docs_build_in_strict_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert (tmp_path / "site" / "ablations" / "index.html").is_file()
    # the sweep figures the pages embed are served with the site
    assert (tmp_path / "site" / "results" / "sweeps" / "budget" / "axis-epochs.png").is_file()


def test_strict_mode_fails_on_broken_links_anchors_figures_and_unlisted_pages(
    tmp_path, monkeypatch, caplog
):
    from mkdocs.exceptions import Abort

    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "docs_hooks.py", copy / "scripts")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "results").symlink_to(ROOT / "results")
    page = copy / "docs" / "vision.md"
    page.write_text(
        page.read_text()
        + "\n[a](deployment.md#no-such-heading) [b](no-such-page.md) [c](#nor-here)\n"
        + "![d](../results/sweeps/full/no-such-figure.png)\n"
    )
    (copy / "docs" / "unlisted.md").write_text("# Not in the navigation\n")
    with caplog.at_level(logging.WARNING), pytest.raises(Abort, match="strict mode"):
        build(copy / "mkdocs.yml", tmp_path / "site")
    log = caplog.text
    for problem in ("#no-such-heading", "no-such-page.md", "#nor-here", "no-such-figure.png",
                    "unlisted.md"):  # fmt: skip
        assert problem in log, f"strict build did not name {problem}"
