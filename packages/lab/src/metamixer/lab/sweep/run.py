"""Running a sweep's cells (local processes) and saving their records; resuming from the records."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from metamixer.core.atomic import write_text
from metamixer.lab import results
from metamixer.lab.study import machine_label
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


def run_cell(cell: Cell, spec: dict, out: Path, threads: int) -> dict:
    """Run a cell unless its record exists; save its record on success.  Returns the result row."""
    mod = spec["modalities"][cell.modality]
    row = {
        "modality": cell.modality,
        "setting": cell.label,
        "seed": cell.seed,
        **dict(cell.setting),
        "metric": mod["metric"],
    }
    done = finished(cell, spec, out)
    if done is not None:
        return {**row, "value": done["metrics"].get(metric_name(cell.modality, mod)), "error": None}
    folder = out / spec["name"] / cell.name
    path = os.pathsep.join(filter(None, [spec["folder"], os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "w") as log:
        code = subprocess.run(
            cell_command(cell, spec, folder), stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    found = sorted(folder.rglob(results.RECORD), key=lambda p: p.stat().st_mtime)
    run = json.loads(found[-1].read_text()) if code == 0 and found else None
    value = None if run is None else run["metrics"].get(mod["metric"])
    if run is None:
        lines = [x for x in (folder / "log.txt").read_text().splitlines() if x.strip()]
        row.update(value=None, error=f"exit {code}: {lines[-1].strip() if lines else 'no output'}")
    elif value is None:
        row.update(value=None, error=f"metric {mod['metric']} missing from the run's record")
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


def run_sweep(
    path: Path,
    out: Path,
    parallel: int | None = None,
    dry_run: bool = False,
    modalities: list[str] | None = None,
    report_only: bool = False,
    only: list[str] | None = None,
) -> tuple[list[dict], str]:
    """Run (or, with ``dry_run``, list) the cells (``only``: those whose tag, e.g.
    ``token_act-softmax`` or ``baseline``, matches one of these shell patterns); returns the
    result rows and the report table (empty while no cell has a record)."""
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
    threads = max(1, cores // parallel)
    todo = [c for c in cells(spec) if not modalities or c.modality in modalities]
    if only:
        tags = list(dict.fromkeys(c.tag for c in todo))
        unmatched = [p for p in only if not fnmatch.filter(tags, p)]
        if unmatched:
            raise ValueError(f"{path}: --cells {unmatched} match no cell; cells: {', '.join(tags)}")
        todo = [c for c in todo if any(fnmatch.fnmatchcase(c.tag, p) for p in only)]
    if dry_run:
        for cell in todo:
            done = finished(cell, spec, out)
            commit = ((done or {}).get("code") or {}).get("commit") or "?"
            state = f"done at {commit[:8]}" if done else "to run"
            print(
                f"{cell.name} ({state}):\n  {shlex.join(cell_command(cell, spec, out / spec['name'] / cell.name))}"
            )
        return [], ""
    rows = []
    if not report_only:
        with ThreadPoolExecutor(parallel) as pool:
            rows = list(pool.map(lambda c: run_cell(c, spec, out, threads), todo))
    records = [
        r for r in results.load_records([records_root(spec, out)]) if r.get("sweep") == spec["name"]
    ]
    if not records:
        return rows, ""
    return rows, write_reports(records, Path(spec.get("report") or out / spec["name"]), spec)


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
