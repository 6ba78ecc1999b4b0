"""A study read from its sweep records: per modality the baseline and its cells, each cell tested
against the baseline (``metamixer.lab.stats``), the positive controls and the paper's claims.

A study's records are a sweep's (``reference`` marks the baseline's; ``group`` names a cell's axis
and value; ``goal`` says whether the metric is better high, ``max``, or low, ``min``).  The text of
the report is ``metamixer.lab.study_text``."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metamixer.lab import stats
from metamixer.lab.machine import machine

#: parts whose removal is a positive control: (name, axis, the values that remove it)
REMOVALS = (
    ("token mixer", "token_mixer", ("identity", "none")),
    ("channel mixer", "channel_mixer", ("identity", "none")),
)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as cells of a grid: the cells on ``axis`` with one of ``values`` (all
    values where empty) are predicted worse than the baseline, or, with ``larger_better``, better
    exactly where their value is larger than the baseline's."""

    text: str
    axis: str
    values: tuple[str, ...] = ()
    larger_better: bool = False
    part: str = "token mixer"  # the part it is about: its positive control qualifies the verdict


CLAIMS = (
    Claim("GELU, not softmax, as the token mixer's coefficient activation (FFNification)",
          "token_act", ("softmax",)),
    Claim("FFNified attention instead of self-attention as the token mixer", "token_mixer",
          ("attention", "hybrid")),
    Claim("larger key and value kernels in the token mixer", "kernel", larger_better=True),
    Claim("a spatial (depthwise) value kernel instead of a pointwise one", "value_kernel", ("1",)),
)  # fmt: skip


def machine_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The machine a record ran on (``machine``: CPU model, torch's thread count, torch version);
    records written before records named it fall back on their ``hardware``, and an unnamed CPU
    is ``unknown``."""
    return dict(record.get("machine") or machine(record.get("hardware")))


def machine_label(record: Mapping[str, Any]) -> str:
    m = machine_of(record)
    cpu = "unknown CPU" if m["cpu"] == "unknown" else m["cpu"]
    threads = m["threads"] or "?"
    return f"{cpu}, {threads} thread{'' if threads == 1 else 's'}, torch {m['torch'] or '?'}"


def code_label(record: Mapping[str, Any]) -> str:
    code = record.get("code") or {}
    return (code.get("commit") or "?")[:8] + (" (dirty)" if code.get("dirty") else "")


def percent(name: str) -> bool:
    """Accuracies, IoUs and APs, recorded as fractions, are shown (and tested) in %."""
    return "acc" in name or "iou" in name.lower() or "AP" in name


@dataclass
class Arm:
    """The runs (seeds) of one cell, their metric in the table's units, and its test."""

    axis: str
    value: str
    order: int
    values: list[float] = field(default_factory=list)
    records: list[Mapping[str, Any]] = field(default_factory=list)
    comparison: stats.Comparison | None = None
    corrected: float | None = None
    rejected: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def label(self) -> str:
        return f"{self.axis}={self.value}"

    @property
    def machines(self) -> list[str]:
        return sorted({machine_label(r) for r in self.records})

    @property
    def codes(self) -> list[str]:
        return sorted({code_label(r) for r in self.records})

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0


@dataclass
class Grid:
    """One modality of a study: its baseline, its cells (tested against the baseline, corrected
    over the grid) and the minimal detectable effect at the baseline's n."""

    modality: str
    metric: str
    goal: str
    unit: str
    baseline: Arm
    cells: list[Arm]
    mde: float | None

    def better(self, delta: float) -> bool:
        return delta > 0 if self.goal == "max" else delta < 0

    def cost(self, delta: float) -> float:
        """How much worse a difference (cell − baseline) makes the metric."""
        return -delta if self.goal == "max" else delta

    def cell(self, axis: str, value: str) -> Arm | None:
        return next((c for c in self.cells if (c.axis, c.value) == (axis, value)), None)

    @property
    def too_few(self) -> list[Arm]:
        return [a for a in [self.baseline, *self.cells] if 0 < a.n < 2]

    @property
    def tested(self) -> list[Arm]:
        return [c for c in self.cells if c.comparison is not None and c.comparison.testable]


def unit(metric: str, scaled: bool) -> str:
    if scaled:
        return "points"
    if "psnr" in metric.lower():
        return "dB"
    return metric.rsplit("/", 1)[-1]


def grids(records: Sequence[Mapping[str, Any]]) -> list[Grid]:
    """The study's grids, one per modality (alphabetical), each cell tested and corrected."""
    out = []
    for modality in sorted({r["modality"] for r in records}):
        mine = sorted(
            (r for r in records if r["modality"] == modality), key=lambda r: r.get("order", 0)
        )
        metric = next(iter(mine[0]["metrics"]))
        raw = [r["metrics"].get(metric) for r in mine]
        scaled = percent(metric) and all(abs(v) <= 1 for v in raw if v is not None)
        arms: dict[tuple[str, str], Arm] = {}
        for r in mine:
            value = r["metrics"].get(metric)
            if value is None:
                continue
            group = r.get("group") or {}
            axis = "baseline" if r.get("reference") else str(group.get("axis"))
            key = (axis, str(group.get("value")))
            arm = arms.setdefault(key, Arm(*key, order=r.get("order", 0)))
            arm.values.append(100 * value if scaled else value)
            arm.records.append(r)
        baseline = next((a for a in arms.values() if a.axis == "baseline"), Arm("baseline", "—", 0))
        cells = [a for a in arms.values() if a is not baseline]
        for c in cells:
            if c.n >= 2 and baseline.n >= 2:
                c.comparison = stats.welch(c.values, baseline.values)
        tested = [c for c in cells if c.comparison is not None and c.comparison.testable]
        reject, corrected = stats.correct([c.comparison.p for c in tested if c.comparison])
        for arm, rejected, p in zip(tested, reject, corrected, strict=True):
            arm.rejected, arm.corrected = rejected, p
        mde = stats.minimal_detectable_effect(baseline.n, baseline.sd) if baseline.n > 1 else None
        goal = mine[0].get("goal", "max")
        out.append(Grid(modality, metric.split(" ", 1)[-1], goal, unit(metric, scaled), baseline,
                        cells, mde))  # fmt: skip
    return out


@dataclass(frozen=True)
class Control:
    """A positive control: removing ``part`` must cost more than the grid's MDE."""

    grid: Grid
    part: str
    cell: Arm | None

    @property
    def cost(self) -> float | None:
        if self.cell is None or self.cell.comparison is None:
            return None
        return self.grid.cost(self.cell.comparison.delta)

    @property
    def passed(self) -> bool | None:
        """Whether the removal costs more than the MDE (``None``: it cannot be checked)."""
        if self.cost is None or self.grid.mde is None:
            return None
        return self.cost > self.grid.mde


def controls(grid: Grid) -> list[Control]:
    """The grid's positive controls, one per part it has a removal cell for."""
    found = []
    for part, axis, values in REMOVALS:
        cell = next((c for v in values if (c := grid.cell(axis, v)) is not None), None)
        if cell is not None:
            found.append(Control(grid, part, cell))
    return found


def verdict(grid: Grid, claim: Claim, cell: Arm) -> str:
    """``supported``, ``contradicted``, ``null`` (no effect beyond the MDE shown) or
    ``untestable``, from the cell's corrected test."""
    c = cell.comparison
    if c is None or not c.testable or cell.corrected is None:
        return "untestable"
    if not cell.rejected:
        return "null"
    predicted_better = False
    if claim.larger_better:
        try:
            base = float(grid_setting(grid, claim.axis))
            predicted_better = float(cell.value) > base
        except (TypeError, ValueError):
            return "untestable"
    return "supported" if grid.better(c.delta) == predicted_better else "contradicted"


def grid_setting(grid: Grid, axis: str) -> Any:
    """The baseline's value of ``axis``: from its records' ``setting``, else from those of a cell
    that varies another axis (one at a time, it keeps the baseline's value of this one), e.g. where
    the baseline's seeds were recorded before the grid had the axis."""
    others = [r for c in grid.cells if c.axis != axis for r in c.records]
    for r in [*grid.baseline.records, *others]:
        setting = r.get("setting") or {}
        if axis in setting:
            return setting[axis]
    return None


def claim_cells(grid: Grid, claim: Claim) -> list[Arm]:
    return [
        c
        for c in grid.cells
        if c.axis == claim.axis and (not claim.values or c.value in claim.values)
    ]
