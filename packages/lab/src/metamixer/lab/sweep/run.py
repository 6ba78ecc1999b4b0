"""Running a sweep: planning its cells, handing the ones without a record to an executor, saving
the records as the cells end (the only place they are written), resuming from the records."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from metamixer.core.atomic import write_text
from metamixer.lab import results
from metamixer.lab.study import machine_label
from metamixer.lab.sweep.executors import Executor, executor_options, make_executor
from metamixer.lab.sweep.job import CellJob, Outcome, execute
from metamixer.lab.sweep.lock import sweep_lock
from metamixer.lab.sweep.report import write_reports
from metamixer.lab.sweep.spec import (
    Cell,
    cell_args,
    cell_command,
    cells,
    finished,
    load_sweep,
    metric_name,
    record_path,
    records_root,
    skipped_axes,
)


def result_row(cell: Cell, spec: dict) -> dict:
    mod = spec["modalities"][cell.modality]
    return {
        "modality": cell.modality,
        "setting": cell.label,
        "seed": cell.seed,
        **dict(cell.setting),
        "metric": mod["metric"],
    }


def done_row(cell: Cell, spec: dict, out: Path) -> dict | None:
    """The cell's result row from its record, or ``None`` if it is still to run."""
    done = finished(cell, spec, out)
    if done is None:
        return None
    mod = spec["modalities"][cell.modality]
    value = done["metrics"].get(metric_name(cell.modality, mod))
    return {**result_row(cell, spec), "value": value, "error": None}


def cell_job(
    cell: Cell, spec: dict, out: Path, threads: int, timeout_s: float | None = None
) -> CellJob:
    """What an executor runs for the cell: its command in its run folder ``out/<sweep>/<cell>``."""
    folder = out.absolute() / spec["name"] / cell.name
    return CellJob(
        name=cell.name,
        command=tuple(cell_command(cell, spec, folder)[1:]),  # the worker's Python runs it
        folder=str(folder),
        env=(("OMP_NUM_THREADS", str(threads)),),
        pythonpath=spec["folder"],
        timeout_s=timeout_s,
    )


def record_outcome(cell: Cell, spec: dict, out: Path, outcome: Outcome) -> dict:
    """Save the cell's record if its run succeeded (the one place records are written, whichever
    executor ran it) and its ``result.json``; a log shipped home lands in the run folder."""
    mod = spec["modalities"][cell.modality]
    row = result_row(cell, spec)
    folder = out / spec["name"] / cell.name
    if outcome.log is not None:
        write_text(folder / "log.txt", outcome.log)
    run = outcome.run
    value = None if run is None else run["metrics"].get(mod["metric"])
    if run is None:
        row.update(value=None, error=outcome.error or f"exit {outcome.code}")
    elif value is None:
        logged = ", ".join(sorted(run["metrics"])) or "nothing"
        row.update(
            value=None,
            error=f"metric {mod['metric']!r} is not in the run's record (it logged: {logged}); "
            "fix the sweep file's metric",
        )
    else:
        row.update(value=value, error=None)
        # the run's hardware: its threads, not the sweep process's
        keep = ("config", "config_sha256", "data", "wall_seconds", "seed", "hardware", "machine")
        results.save_record(
            record_path(cell, spec, out).parent,
            {
                **{k: run.get(k) for k in keep},
                "kind": "sweep",
                "sweep": spec["name"],
                "modality": cell.modality,
                "cell": cell.name,
                "setting": dict(cell.setting),
                "group": cell.group,
                "order": cell.order,
                "reference": cell.varied is None,
                "goal": mod.get("goal", "max"),
                "metrics": {metric_name(cell.modality, mod): value},
                "run_metrics": run["metrics"],
                "cell_args": cell_args(cell, spec),
            },
        )
    write_text(folder / "result.json", json.dumps(row))
    return row


def run_cell(cell: Cell, spec: dict, out: Path, threads: int) -> dict:
    """Run a cell here unless its record exists; save its record on success.  Returns the result
    row."""
    done = done_row(cell, spec, out)
    if done is not None:
        return done
    return record_outcome(cell, spec, out, execute(cell_job(cell, spec, out, threads)))


def run_sweep(
    path: Path,
    out: Path,
    parallel: int | None = None,
    dry_run: bool = False,
    modalities: list[str] | None = None,
    report_only: bool = False,
    only: list[str] | None = None,
    executor: str | None = None,
    executor_flags: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict], str]:
    """Run (or, with ``dry_run``, list) the cells (``only``: those whose tag, e.g.
    ``token_act-softmax`` or ``baseline``, matches one of these shell patterns) on ``executor``
    (``local``, ``slurm``, ``submitit-local``, ``ray``; default: the sweep file's, else local) with
    the file's options for it updated by ``executor_flags``; returns the result rows and the report
    table (empty while no cell has a record)."""
    spec = load_sweep(path)
    if modalities:
        unknown = set(modalities) - set(spec["modalities"])
        if unknown:
            raise ValueError(
                f"{path}: no modality {sorted(unknown)}; it has {sorted(spec['modalities'])}"
            )
    for modality, axes in skipped_axes(spec).items():
        if axes and (not modalities or modality in modalities):
            warnings.warn(
                f"sweep {spec['name']}: {modality} has no knob for {', '.join(axes)}; "
                "those cells are skipped there",
                stacklevel=2,
            )
    cores = os.cpu_count() or 1
    parallel = max(1, min(parallel or spec.get("parallel", cores), cores))
    todo = [c for c in cells(spec) if not modalities or c.modality in modalities]
    if only:
        tags = list(dict.fromkeys(c.tag for c in todo))
        unmatched = [p for p in only if not fnmatch.filter(tags, p)]
        if unmatched:
            raise ValueError(f"{path}: --cells {unmatched} match no cell; cells: {', '.join(tags)}")
        todo = [c for c in todo if any(fnmatch.fnmatchcase(c.tag, p) for p in only)]
    rows: list[dict] = []
    if dry_run or not report_only:
        name, options = executor_options(spec, executor, executor_flags)
        runner = make_executor(name, options, parallel, out.absolute() / spec["name"])
    if dry_run:
        check_before_running(spec)
        print(f"executor: {runner.describe()}")
        for cell in todo:
            done = finished(cell, spec, out)
            commit = ((done or {}).get("code") or {}).get("commit") or "?"
            state = f"done at {commit[:8]}" if done else f"to run on {runner.name}"
            print(
                f"{cell.name} ({state}):\n  {shlex.join(cell_command(cell, spec, out / spec['name'] / cell.name))}"
            )
        return [], ""
    if not report_only:
        with sweep_lock(out / spec["name"]):
            rows = run_cells(todo, spec, out, runner)
    records = [
        r for r in results.load_records([records_root(spec, out)]) if r.get("sweep") == spec["name"]
    ]
    if not records:
        return rows, ""
    return rows, write_reports(records, Path(spec.get("report") or out / spec["name"]), spec)


def check_before_running(spec: dict) -> None:
    """What a dry run can check without training: every module in ``imports`` imports (in a
    subprocess with the sweep file's folder on the path, as the cells run), and every metric is
    a logged name (``test/…`` or ``val/…``)."""
    for module in spec.get("imports", []):
        path = os.pathsep.join(filter(None, [spec["folder"], os.environ.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": path}, timeout=600,
        )  # fmt: skip
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ValueError(f"imports: {module} does not import from {spec['folder']}: {last}")
    for modality, mod in spec["modalities"].items():
        if not str(mod["metric"]).startswith(("test/", "val/")):
            raise ValueError(
                f"{modality}: metric {mod['metric']!r} is not a logged name (test/… or val/…, "
                "e.g. test/acc1, test/mse)"
            )


def run_cells(todo: list[Cell], spec: dict, out: Path, runner: Executor) -> list[dict]:
    """The cells' result rows (in ``todo``'s order): recorded cells from their records, the others
    run on ``runner`` (checked first: refused before any cell starts) and recorded as they end."""
    rows: list[dict | None] = [done_row(cell, spec, out) for cell in todo]
    waiting = {
        cell.name: i for i, (cell, row) in enumerate(zip(todo, rows, strict=True)) if row is None
    }
    if not waiting:
        return [r for r in rows if r is not None]
    runner.check()
    jobs = [
        cell_job(todo[i], spec, out, runner.threads(), runner.timeout_s()) for i in waiting.values()
    ]
    print(f"{len(jobs)} of {len(todo)} cells to run; {runner.describe()}", flush=True)
    for k, (job, outcome) in enumerate(runner.run(jobs), 1):
        i = waiting[job.name]
        row = rows[i] = record_outcome(todo[i], spec, out, outcome)
        state = (
            f"finished, {row['metric']} {row['value']:.4g}"
            if row["error"] is None
            else f"failed: {row['error']}"
        )
        print(f"[{k}/{len(jobs)}] {job.name} {state}", flush=True)
        if outcome.run is not None and row["value"] is None:  # the run ran; its metric is absent
            raise ValueError(f"{job.name}: {row['error']} (no further cells run)")
    return [r for r in rows if r is not None]


def rerun(path: Path, name: str, out: Path, threads: int) -> str:
    """Run one recorded cell again (by its name, e.g. ``timeseries__kernel-25__seed-1``) with its
    recorded arguments, into ``out``, and compare with its record and its cell's seed spread."""
    spec = load_sweep(path)
    by_name = {c.name: c for c in cells(spec)}
    if name not in by_name:
        raise ValueError(f"{path}: no cell {name!r}; e.g. {', '.join(list(by_name)[:3])}")
    cell = by_name[name]
    recorded = finished(cell, spec, out)
    if recorded is None:
        raise ValueError(f"{name} has no record under {records_root(spec, out)} to compare with")
    metric = metric_name(cell.modality, spec["modalities"][cell.modality])
    siblings = [
        finished(c, spec, out)
        for c in cells(spec)
        if c.modality == cell.modality and c.tag == cell.tag
    ]
    values = [r["metrics"][metric] for r in siblings if r is not None]
    _, spread, n = results.stats(values)
    spec["records"] = str(out / spec["name"] / "rerun-records")
    with sweep_lock(out / spec["name"]):
        row = run_cell(cell, spec, out, threads)
    if row["value"] is None:
        raise ValueError(f"{name} failed again: {row['error']}")
    delta = row["value"] - recorded["metrics"][metric]
    again = finished(cell, spec, out) or {}
    before, now = machine_label(recorded), machine_label(again)
    machines = f"both on {now}" if before == now else f"recorded on {before}, rerun on {now}"
    return (
        f"{name}: {metric} recorded {recorded['metrics'][metric]:.4g}, rerun {row['value']:.4g} "
        f"(difference {delta:+.3g}; the cell's seed spread: std {spread:.3g} over {n} seeds; "
        f"{machines})"
    )
