"""mkdocs hooks (named in mkdocs.yml): serve the repository's sweep figures with the site.

The pages link a figure relative to the repository (``../results/sweeps/full/axis-kernel.png`` from
``docs/ablations.md``), so the link also works where the Markdown is read as it is.  The build adds
every file under ``results/sweeps/`` that a page can embed to the site under the same path, and
points such links at it; a link to a figure that does not exist stays broken and fails the strict
build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

#: repository folders whose figures the pages embed, relative to the repository
SERVED = ("results/sweeps",)
FIGURES = (".png", ".svg")


def on_files(files: Files, config: Any) -> Files:
    root = Path(config.config_file_path).resolve().parent
    for folder in SERVED:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in FIGURES:
                uri = path.relative_to(root).as_posix()
                files.append(File(uri, str(root), config.site_dir, config.use_directory_urls))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """``](../results/…)`` from a page in ``docs/`` -> the served copy (one ``../`` less)."""
    depth = page.file.src_uri.count("/")
    above = "../" * (depth + 1)
    pattern = re.compile(
        r"\]\(" + re.escape(above) + r"(" + "|".join(map(re.escape, SERVED)) + r")/"
    )
    return pattern.sub(lambda m: "](" + "../" * depth + m.group(1) + "/", markdown)
