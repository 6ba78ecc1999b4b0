"""A study's report as Markdown, generated from its records (``metamixer.lab.study``): first, in
words, the positive controls and the cells too small to test; then per modality the table (Δ
against the baseline, Welch 95 % interval, p, Holm-corrected p; bold where the corrected test
rejects), the minimal detectable effect and the machines; last the conclusions per claim of the
paper and modality."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from metamixer.lab import stats
from metamixer.lab.study import (
    CLAIMS,
    Arm,
    Control,
    Grid,
    claim_cells,
    controls,
    grids,
    machine_label,
    verdict,
)

MIXED_MACHINES = "†"
MIXED_CODE = "‡"


def decimals(grid: Grid) -> int:
    """Decimals that show two significant digits of the baseline's standard deviation."""
    sd = grid.baseline.sd
    if sd <= 0 or not math.isfinite(sd):
        return 3
    return max(0, 1 - math.floor(math.log10(sd)))


def number(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def pvalue(p: float | None) -> str:
    return "" if p is None or math.isnan(p) else f"{p:.2g}"


def spread(arm: Arm) -> str:
    """``mean ± std (n)`` with two significant digits of the std (one run: four digits)."""
    mean = sum(arm.values) / arm.n
    if arm.n == 1:
        return f"{mean:.4g} (1)"
    sd = arm.sd
    digits = 3 if sd <= 1e-9 * abs(mean) else max(0, 1 - math.floor(math.log10(sd)))
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({arm.n})"


def mde_text(grid: Grid) -> str:
    if grid.mde is None:
        return "not computable (the baseline has fewer than two seeds)"
    return f"{grid.mde:.{decimals(grid)}f} {grid.unit}"


def direction(grid: Grid) -> str:
    return "higher is better" if grid.goal == "max" else "lower is better"


def control_sentence(control: Control) -> str:
    grid, cell = control.grid, control.cell
    assert cell is not None
    d = decimals(grid)
    what = f"{grid.modality} ({grid.metric}, {direction(grid)}): removing the {control.part}"
    if control.cost is None:
        return f"{what} cannot be checked ({cell.n} seed(s) in the cell, {grid.baseline.n} in the baseline)."
    delta = cell.comparison.delta if cell.comparison else 0.0
    if control.cost > 0:
        effect = f"costs {control.cost:.{d}f} {grid.unit}"
    else:
        effect = f"costs nothing (Δ {number(delta, d)} {grid.unit})"
    if cell.corrected is not None:
        effect += f" ({stats.CORRECTION_NAME} p = {pvalue(cell.corrected)})"
    if control.passed:
        return f"{what} {effect}, more than the MDE of {mde_text(grid)}: the control passes."
    return (
        f"{what} {effect}, not more than the MDE of {mde_text(grid)}: **the control fails** — "
        f"this task cannot show what the {control.part} contributes."
    )


def controls_text(found: Sequence[Grid]) -> list[str]:
    checks = [c for g in found for c in controls(g)]
    lines = [
        "**Positive controls.** A task can tell architectures apart only if removing the token "
        "mixer and removing the channel mixer each cost more than the minimal detectable effect "
        "(MDE, below each table)."
    ]
    if not checks:
        return [*lines, "", "No cell of this grid removes the token mixer or the channel mixer: "
                "no positive control is checked here, so a null result below may mean the task "
                "cannot discriminate."]  # fmt: skip
    failed = [c for c in checks if c.passed is not True]
    lines[0] += (
        f" {len(failed)} of {len(checks)} controls {'fails' if len(failed) == 1 else 'fail'}."
        if failed
        else f" {'Both' if len(checks) == 2 else f'All {len(checks)}'} controls pass."
    )
    return [*lines, "", *(f"- {control_sentence(c)}" for c in checks)]


def too_few_text(found: Sequence[Grid]) -> list[str]:
    small = [(g, a) for g in found for a in g.too_few]
    if not small:
        return ["**Cells with fewer than two seeds:** none."]
    listed = "; ".join(f"{g.modality} {a.label} ({a.n} seed)" for g, a in small)
    return [f"**Cells with fewer than two seeds** (listed, not tested): {listed}."]


def table(grid: Grid) -> list[str]:
    d = decimals(grid)
    family = len(grid.tested)
    header = [
        "axis", "value", f"{grid.metric} (mean ± std (n))", f"Δ ({grid.unit})", "95 % CI (Welch)",
        "p", f"p ({stats.CORRECTION_NAME})", "code",
    ]  # fmt: skip
    rows = [header]
    for arm in [grid.baseline, *grid.cells]:
        marks = ""
        if len(arm.machines) > 1:
            marks += MIXED_MACHINES
        if len(arm.codes) > 1:
            marks += MIXED_CODE
        shown = spread(arm) + (f" {marks}" if marks else "")
        c = arm.comparison
        if c is None:
            note = "baseline" if arm is grid.baseline else "no test (n < 2)"
            rows.append([arm.axis, arm.value, shown, note, "", "", "", ", ".join(arm.codes)])
            continue
        delta = number(c.delta, d)
        if not c.testable:
            rows.append([arm.axis, arm.value, shown, delta, "no spread: no test", "", "",
                         ", ".join(arm.codes)])  # fmt: skip
            continue
        interval = f"{number(c.low, d)} to {number(c.high, d)}"
        if arm.rejected:
            delta, interval = f"**{delta}**", f"**{interval}**"
        rows.append([arm.axis, arm.value, shown, delta, interval, pvalue(c.p),
                     pvalue(arm.corrected), ", ".join(arm.codes)])  # fmt: skip
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    intro = (
        f"**{grid.modality}** — {grid.metric} ({grid.unit}, {direction(grid)}); Δ = cell − baseline "
        f"with Welch's 95 % interval; p two-sided, {stats.CORRECTION_NAME}-corrected over the "
        f"{family} tests of this table; bold: the corrected test rejects at {stats.ALPHA}."
    )
    mde = (
        f"Minimal detectable effect at n = {grid.baseline.n} per arm (80 % power, α = "
        f"{stats.ALPHA}, two-sided, the baseline's std {grid.baseline.sd:.{d + 1}f}): "
        f"{mde_text(grid)}."
    )
    return [intro, "", *lines, "", mde, "", *footnotes(grid)]


def footnotes(grid: Grid) -> list[str]:
    arms = [grid.baseline, *grid.cells]
    counts: dict[str, int] = {}
    for arm in arms:
        for r in arm.records:
            label = machine_label(r)
            counts[label] = counts.get(label, 0) + 1
    machines = "; ".join(f"{m} ({n} runs)" for m, n in counts.items())
    lines = [f"Machines: {machines}."]
    if len(counts) > 1:
        lines[0] += (" The grid mixes machines; the machine is not a blocking factor here, so "
                     "machine differences add to the seeds' noise.")  # fmt: skip
    if any(len(a.machines) > 1 for a in arms):
        lines.append(f"{MIXED_MACHINES} the seeds of this cell ran on different machines.")
    if any(len(a.codes) > 1 for a in arms):
        lines.append(f"{MIXED_CODE} the seeds of this cell ran at different code versions.")
    return [lines[0], *(["", " ".join(lines[1:])] if len(lines) > 1 else [])]


def evidence(grid: Grid, cell: Arm) -> str:
    c = cell.comparison
    assert c is not None
    d = decimals(grid)
    return (
        f"{cell.label}: Δ {number(c.delta, d)} {grid.unit} (95 % CI {number(c.low, d)} to "
        f"{number(c.high, d)}), p = {pvalue(c.p)}, {stats.CORRECTION_NAME} p = "
        f"{pvalue(cell.corrected)}"
    )


def claim_text(grid: Grid, claim_index: int) -> str:
    claim = CLAIMS[claim_index]
    cells = claim_cells(grid, claim)
    if not cells:
        return f"{grid.modality}: not testable here (no such cell in this grid)"
    parts = []
    for cell in cells:
        kind = verdict(grid, claim, cell)
        delta = cell.comparison.delta if cell.comparison is not None else 0.0
        if kind == "untestable":
            if cell.comparison is None:
                why = "fewer than two seeds"
            elif not cell.comparison.testable:
                why = "no spread in either arm"
            else:
                why = f"the baseline's {claim.axis} is not recorded"
            parts.append(f"not testable here ({cell.label}: {why})")
        elif kind == "null" and grid.mde is not None and abs(delta) > grid.mde:
            parts.append(
                f"not resolved: the estimate exceeds the MDE of {mde_text(grid)} but the "
                f"corrected test does not reject ({evidence(grid, cell)})"
            )
        elif (
            kind == "null"
            and grid.mde is not None
            and cell.comparison is not None
            and max(abs(cell.comparison.low), abs(cell.comparison.high)) > grid.mde
        ):
            parts.append(
                f"no difference found, but the 95 % interval still admits effects beyond the "
                f"MDE of {mde_text(grid)} ({evidence(grid, cell)})"
            )
        elif kind == "null":
            parts.append(
                f"no effect larger than {mde_text(grid)} at this scale ({evidence(grid, cell)})"
            )
        else:
            parts.append(f"{kind} ({evidence(grid, cell)})")
    text = f"{grid.modality}: " + "; ".join(parts)
    failed = [c for c in controls(grid) if c.part == claim.part and c.passed is not True]
    if failed:
        text += (
            f" — but removing the {claim.part} costs no more than the MDE on this task (its "
            "positive control fails), so the task cannot show what that part contributes"
        )
    return text


def conclusions(found: Sequence[Grid]) -> list[str]:
    lines = [
        "**Conclusions per claim of the paper** (generated from the records: *supported* or "
        f"*contradicted* where the {stats.CORRECTION_NAME}-corrected test rejects at "
        f"{stats.ALPHA} in the paper's direction or against it; otherwise the smallest effect "
        "the design could detect):",
        "",
    ]
    tested = [i for i, claim in enumerate(CLAIMS) if any(claim_cells(g, claim) for g in found)]
    if not tested:
        return [lines[0].split(" (generated")[0] + ": no cell of this grid tests one."]
    for i, claim in enumerate(CLAIMS):
        if i not in tested:
            lines.append(f"- *{claim.text}*: not testable here (no such cell in this grid).")
            continue
        lines.append(f"- *{claim.text}*:")
        lines += [f"    - {claim_text(g, i)}." for g in found]  # nested: four spaces
    return lines


def report(records: Sequence[Mapping[str, Any]]) -> str:
    """The study's report as Markdown."""
    found = grids(records)
    lines = [*controls_text(found), "", *too_few_text(found)]
    for grid in found:
        lines += ["", *table(grid)]
    lines += ["", *conclusions(found)]
    return "\n".join(lines)
