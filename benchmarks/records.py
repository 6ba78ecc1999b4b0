"""Benchmark rows as result records (``metamixer.lab.results``): one record per table row, each
run of a benchmark in its own folder, so the generated tables (README, docs/) show mean ± std over runs."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metamixer.lab.results import markdown, save_record


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def save_rows(out: Path, rows: Sequence[Mapping[str, Any]], run: str, **setup: Any) -> None:
    """Each row (``group`` labels, ``metrics``) as ``out/<its labels>/<run>/record.json``; rows
    keep their order in the tables (``order``, default: their position)."""
    for position, row in enumerate(rows):
        name = slug("_".join(str(v) for v in row["group"].values()))
        save_record(out / name / run, {"order": position, **row, **setup})


def _number(value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows of one run as a markdown table: labels, then metrics (absent: ``—``)."""
    labels = list(dict.fromkeys(k for row in rows for k in row["group"]))
    metrics = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    cells = [[*labels, *metrics]]
    for row in rows:
        cells.append([_number(row["group"].get(k, "")) for k in labels]
                     + [_number(row["metrics"].get(m, "—")) for m in metrics])  # fmt: skip
    print(markdown(cells), flush=True)
