"""The README's code examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


@pytest.mark.parametrize("section", ["Designing a new mixer"])
def test_readme_example_runs(section, monkeypatch):
    from metamixer.core import CHANNEL_MIXERS, TOKEN_MIXERS

    for registry in (TOKEN_MIXERS, CHANNEL_MIXERS):  # the example's mixer stays in this test
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    blocks = python_blocks(section)
    assert blocks, f"no python example under '## {section}'"
    for code in blocks:
        exec(compile(code, f"README:{section}", "exec"), {})
