"""A study's report from small synthetic record sets: its statistics equal scipy's and
statsmodels' computed directly, Holm's correction decides the bold, a cell with one seed is listed
and not tested, mixed machines are flagged, and a failing positive control is said at the top."""

import re

import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from metamixer.lab.study import grids
from metamixer.lab.study_text import report

BASE = [10.0, 10.1, 10.2]
CELLS = {
    ("token_mixer", "identity"): [9.0, 9.1, 9.2],  # a large cost: rejects after Holm
    ("token_act", "softmax"): [9.80, 9.90, 9.95],  # p ≈ 0.044 alone, not after Holm
    ("channel_mixer", "identity"): [10.05, 10.15, 10.2],  # costs nothing: a failing control
    ("expansion", "2"): [10.0, 10.2, 10.1],
    ("expansion", "4"): [10.02, 10.12, 10.22],
}


def record(axis, value, result, seed, *, cpu="Xeon", commit="a" * 40, order=1, goal="max"):
    reference = axis == "baseline"
    return {
        "modality": "superres", "group": {"axis": axis, "value": value}, "order": order,
        "reference": reference, "goal": goal, "metrics": {"superres test/psnr": result},
        "seed": seed, "code": {"commit": commit, "dirty": False},
        "hardware": {"cpu": cpu, "threads": 2, "torch": "2.14.1"},
        "setting": {"kernel": 3},
    }  # fmt: skip


def study(cells=CELLS, base=BASE, **kwargs):
    goal = kwargs.get("goal", "max")
    records = [record("baseline", "FFNet", v, s, order=0, goal=goal) for s, v in enumerate(base)]
    for i, ((axis, value), values) in enumerate(cells.items(), start=1):
        records += [record(axis, value, v, s, order=i, **kwargs) for s, v in enumerate(values)]
    return records


def row(text, axis, value):
    return next(line for line in text.splitlines() if line.startswith(f"| {axis} | {value} |"))


def test_each_cell_has_scipys_welch_interval_and_p_and_holms_correction():
    (grid,) = grids(study())
    raw = [stats.ttest_ind(v, BASE, equal_var=False) for v in CELLS.values()]
    _, holm, _, _ = multipletests([r.pvalue for r in raw], alpha=0.05, method="holm")
    for cell, r, corrected in zip(grid.cells, raw, holm, strict=True):
        interval = r.confidence_interval(0.95)
        c = cell.comparison
        assert c is not None and c.p == pytest.approx(r.pvalue, rel=1e-12)
        assert (c.low, c.high) == pytest.approx((interval.low, interval.high), rel=1e-12)
        assert c.delta == pytest.approx(sum(CELLS[cell.axis, cell.value]) / 3 - sum(BASE) / 3)
        assert cell.corrected == pytest.approx(corrected, rel=1e-12)
    text = report(study())
    assert "| p (Holm) |" in text.splitlines()[next(
        i for i, line in enumerate(text.splitlines()) if line.startswith("| axis"))]  # fmt: skip
    assert "Holm-corrected over the 5 tests of this table" in text
    softmax = row(text, "token_act", "softmax")
    assert f"| {raw[1].pvalue:.2g} | {holm[1]:.2g} |" in softmax


def test_the_minimal_detectable_effect_is_statsmodels_effect_size_times_the_baseline_sd():
    (grid,) = grids(study())
    d = TTestIndPower().solve_power(effect_size=None, nobs1=3, alpha=0.05, power=0.8)
    assert grid.mde == pytest.approx(d * stats.tstd(BASE), rel=1e-9)
    assert "Minimal detectable effect at n = 3 per arm (80 % power, α = 0.05" in report(study())
    assert f": {grid.mde:.3f} dB." in report(study())  # in the metric's units


def test_holms_correction_decides_which_cells_are_bold():
    alone = report(study({("token_act", "softmax"): CELLS["token_act", "softmax"]}))
    assert "**−0.217**" in row(alone, "token_act", "softmax")  # one test: p 0.044 rejects
    full = report(study())
    assert "**" not in row(full, "token_act", "softmax")  # five tests: Holm p 0.18 does not
    assert "**−1.000**" in row(full, "token_mixer", "identity")  # Holm p 0.0013 still rejects


def test_a_cell_with_one_seed_is_listed_and_not_tested():
    cells = {**CELLS, ("kernel", "5"): [10.3]}
    (grid,) = grids(study(cells))
    lonely = grid.cell("kernel", "5")
    assert lonely is not None and lonely.comparison is None and lonely.corrected is None
    assert len(grid.tested) == len(CELLS)  # the family Holm corrects over leaves it out
    text = report(study(cells))
    assert (
        "**Cells with fewer than two seeds** (listed, not tested): superres kernel=5 (1 seed)."
        in text
    )
    assert "no test (n < 2)" in row(text, "kernel", "5")
    assert "kernel=5: fewer than two seeds" in text  # the kernel claim is not testable here


def test_seeds_from_different_machines_or_code_versions_are_flagged():
    records = study()
    for r in records:
        if r["group"]["value"] == "softmax" and r["seed"] == 2:
            r["hardware"] = {"threads": 2, "torch": "2.14.1"}  # an older record: CPU unknown
        if r["group"]["value"] == "2" and r["seed"] == 0:
            r["code"]["commit"] = "b" * 40
    text = report(records)
    assert "(3) †" in row(text, "token_act", "softmax")
    assert "(3) ‡" in row(text, "expansion", "2")
    assert "†" not in row(text, "expansion", "4") and "‡" not in row(text, "expansion", "4")
    assert "† the seeds of this cell ran on different machines." in text
    assert "unknown CPU, 2 threads, torch 2.14.1 (1 runs)" in text
    assert "The grid mixes machines" in text
    # a record that names its machine is read by it, not by its hardware
    records[0]["machine"] = {"cpu": "Epyc", "threads": 1, "torch": "2.14.1"}
    assert "(3) †" in row(report(records), "baseline", "FFNet")


def test_a_failing_positive_control_is_said_in_words_before_any_table():
    text = report(study())
    first_table = text.index("\n| axis |")
    top = text[:first_table]
    assert "1 of 2 controls fails" in top
    assert re.search(r"removing the channel mixer costs nothing \(Δ \+0\.033 dB\) \(Holm p = 1\), "
                     r"not more than the MDE of [0-9.]+ dB: \*\*the control fails\*\*", top)  # fmt: skip
    assert re.search(r"removing the token mixer costs 1\.000 dB \(Holm p = 0\.0013\), more than the "
                     r"MDE of [0-9.]+ dB: the control passes", top)  # fmt: skip
    # lower is better (MSE): a removal that lowers the metric costs nothing
    lower = report(study(goal="min"))
    assert "removing the token mixer costs nothing (Δ −1.000" in lower[: lower.index("\n| axis |")]
    no_controls = report(study({("token_act", "softmax"): CELLS["token_act", "softmax"]}))
    assert "no positive control is checked here" in no_controls[: no_controls.index("\n| axis |")]


def test_conclusions_name_the_verdict_with_its_interval_and_corrected_p():
    conclusions = report(study()).split("**Conclusions per claim of the paper**")[1]
    lines = conclusions.splitlines()
    softmax = lines[lines.index(next(x for x in lines if "softmax, as" in x)) + 1]
    # not rejected after Holm, and the interval reaches past the MDE: no bound is claimed
    assert (
        "superres: no difference found, but the 95 % interval still admits effects beyond"
        in softmax
    )
    within = report(study({**CELLS, ("token_act", "softmax"): [10.02, 10.1, 10.17]}))
    assert re.search(
        r"superres: no effect larger than [0-9.]+ dB at this scale \(token_act=softmax", within
    )
    assert "Holm p = 0.18" in softmax and "95 % CI −0.424 to −0.009" in softmax
    attention = next(line for line in conclusions.splitlines() if "self-attention" in line)
    assert attention.endswith(": not testable here (no such cell in this grid).")
    untested = report(study({("expansion", "2"): CELLS["expansion", "2"]}))
    assert untested.endswith(
        "**Conclusions per claim of the paper**: no cell of this grid tests one."
    )
    supported = report(study({("token_act", "softmax"): [9.0, 9.1, 9.2]}))
    assert "superres: supported (token_act=softmax: Δ −1.000 dB" in supported
    contradicted = report(study({("token_act", "softmax"): [11.0, 11.1, 11.2]}))
    assert "superres: contradicted (token_act=softmax: Δ +1.000 dB" in contradicted
    larger = report(study({("kernel", "7"): [11.0, 11.1, 11.2]}))  # larger kernel, better
    assert "superres: supported (kernel=7" in larger
    smaller = study({("kernel", "1"): [9.0, 9.1, 9.2], ("token_act", "softmax"): BASE})
    for r in smaller:  # the baseline's seeds were recorded before the grid had a kernel axis
        r["setting"] = {"kernel": 1} if r["group"]["axis"] == "kernel" else {}
    assert "superres: not testable here (kernel=1: the baseline's kernel is not recorded" in report(
        smaller
    )
    for r in smaller:  # a cell on another axis keeps the baseline's kernel
        if r["group"]["axis"] == "token_act":
            r["setting"] = {"kernel": 3}
    assert "superres: supported (kernel=1" in report(smaller)  # smaller kernel, worse
    null = report(study({("token_act", "softmax"): [10.0, 10.2, 10.1]}))
    assert re.search(r"superres: no effect larger than [0-9.]+ dB at this scale", null)
    assert "its positive control fails" not in null  # no removal cell: no control to qualify it
    # the token mixer's removal costs nothing here: every token-mixer verdict says so
    useless = {**CELLS, ("token_mixer", "identity"): [10.1, 10.0, 10.2]}
    lines = report(study(useless)).splitlines()
    softmax = lines[lines.index(next(x for x in lines if "softmax, as" in x)) + 1]
    assert softmax.endswith("removing the token mixer costs no more than the MDE on this task "
                            "(its positive control fails), so the task cannot show what that part "
                            "contributes.")  # fmt: skip


def test_a_hand_edited_study_report_fails_the_check_naming_its_line(tmp_path):
    import json

    from metamixer.lab.results import update_page

    records = tmp_path / "records"
    for i, r in enumerate(study()):
        folder = records / "s" / str(i)
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps(r))
    page = tmp_path / "page.md"
    page.write_text("# p\n\n<!-- results:s -->\n<!-- /results:s -->\n")
    assert update_page(page, records, root=tmp_path) == ["s"]
    assert update_page(page, records, root=tmp_path, check=True) == ["s"]
    text = page.read_text()
    page.write_text(text.replace("**−1.000**", "**−1.200**", 1))
    with pytest.raises(ValueError, match=r"page\.md, table 's', line \d+: the page has"):
        update_page(page, records, root=tmp_path, check=True)


def test_save_record_names_the_machine_of_the_run_it_records(tmp_path):
    import json

    from metamixer.lab.results import save_record

    run_hardware = {"cpu": "Epyc", "threads": 1, "torch": "2.14.1", "cpus": 2}
    saved = json.loads(save_record(tmp_path, {"hardware": run_hardware}).read_text())
    assert saved["machine"] == {"cpu": "Epyc", "threads": 1, "torch": "2.14.1"}
    older = json.loads(save_record(tmp_path, {"hardware": {"threads": 2}}).read_text())
    assert older["machine"]["cpu"] == "unknown"


def test_cells_without_spread_get_no_test_and_fractions_are_tested_in_percent():
    constant = report(study({("expansion", "2"): [10.0] * 3}, base=[10.0] * 3))
    assert "no spread: no test" in row(constant, "expansion", "2")
    assert "over the 0 tests of this table" in constant
    records = study()
    for r in records:
        r["metrics"] = {"vision test/acc1": r["metrics"]["superres test/psnr"] / 100}
    (grid,) = grids(records)
    assert grid.unit == "points" and grid.baseline.values == pytest.approx(BASE)  # ×100
    cell = grid.cell("token_act", "softmax")
    assert cell is not None and cell.comparison is not None
    assert cell.comparison.p == pytest.approx(
        stats.ttest_ind(CELLS["token_act", "softmax"], BASE, equal_var=False).pvalue, rel=1e-9
    )


#: sweeps whose task must pass both positive controls, from their committed records
CONTROL_SWEEPS = {"sweep-controls-timeseries": ("timeseries", "test/mse")}


@pytest.mark.parametrize("sweep", sorted(CONTROL_SWEEPS))
def test_committed_control_tasks_pass_both_positive_controls(sweep):
    from pathlib import Path

    from metamixer.lab.results import load_records
    from metamixer.lab.study import controls

    folder = Path(__file__).resolve().parents[1] / "results" / "records" / sweep
    modality, metric = CONTROL_SWEEPS[sweep]
    (grid,) = grids(load_records([folder]))
    assert (grid.modality, grid.metric) == (modality, metric)
    assert grid.baseline.n >= 5 and all(c.n >= 5 for c in grid.cells)
    assert len({m for a in [grid.baseline, *grid.cells] for m in a.machines}) == 1  # one machine
    found = {c.part: c for c in controls(grid)}
    assert sorted(found) == ["channel mixer", "token mixer"]
    for part, control in found.items():
        assert control.passed, (
            f"{sweep}: removing the {part} costs {control.cost} {grid.unit}, "
            f"not more than the MDE of {grid.mde}"
        )
