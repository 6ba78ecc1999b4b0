"""Cross-modality ablation sweeps over MetaMixer sub-operations.

    python -m metamixer.lab.sweep experiments/sweeps/full.yaml [--modalities vision] [--dry-run]
    python -m metamixer.lab.sweep experiments/sweeps/full.yaml --report   # tables + figures only

A sweep file declares the ``grid`` (axis -> values; the first value of every axis is the baseline)
and, per modality, the experiment config(s), a budget, the ``metric`` and its ``goal`` (max/min),
how each axis maps to that modality's command-line arguments (``knobs``: one argument or a list),
optionally its own values of some axes (``grid``), what a value label means there (``values``:
label -> argument text, e.g. ``hybrid: "[ffnified,attention]"``), arguments a value needs
besides its knob (``extra``: label -> list) and values to ``skip``.  The
value ``default`` passes no argument (the config's own choice, e.g. each mixer's own coefficient
activation).  An axis a modality has no knob for is skipped there with a warning.  ``seeds`` runs
every cell once per seed; ``imports`` lists modules every cell imports first (``--import``), e.g.
one that registers a new mixer (the sweep file's folder is on the cells' ``PYTHONPATH``).
``mode: one-at-a-time`` varies one axis at a time from the baseline, ``product`` runs the grid.

Every cell and seed is one ``python -m metamixer.<modality> fit`` run in its own folder under
``--out``; when it succeeds, its record (metric, resolved config, code version, data checksum,
seed, wall time, the cell's arguments) is saved under ``records`` (``results/records/<name>`` for
a committed study).  A cell whose record exists with the same arguments is done: a killed sweep,
or one started on a fresh checkout holding the committed records, continues where it stopped.  A
failed cell is reported with its error's last line and run again next time.  ``--rerun CELL``
runs one recorded cell again and compares its metric with the record and the cell's seed spread.  Reports, written to
``report`` (default: the run folder): ``results.csv`` (one row per run), ``results.md`` (mean ±
std per cell and modality, the difference to the baseline; bold where it exceeds twice its
standard error) and one figure per axis.  Parallel cells share the cores (threads = cores /
parallel).  Paths in the sweep file are read relative to its folder, the repository root two
levels up, or the current folder.

Cells run as subprocesses, so this module imports no modality package.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import itertools
import json
import os
import shlex
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from metamixer.core.atomic import write_text

from . import results

KEYS = {"grid", "modalities", "mode", "parallel", "imports", "seeds", "records", "report",
        "extends"}  # fmt: skip
MODALITY_KEYS = {"config", "metric", "goal", "budget", "knobs", "grid", "values", "extra", "skip"}
DEFAULT = "default"  # a value that passes no argument: the config's own choice


@dataclass(frozen=True)
class Cell:
    modality: str
    setting: tuple[tuple[str, Any], ...]  # (axis, value) pairs
    seed: int | None = None
    varied: tuple[str, Any] | None = None  # the axis and value that differ from the baseline
    order: int = 0
    one_at_a_time: bool = True

    @property
    def tag(self) -> str:
        """The cell without its seed: the varied axis and value (one at a time) or every one."""
        if not self.one_at_a_time:
            return "__".join(f"{a}-{v}" for a, v in self.setting)
        return "baseline" if self.varied is None else f"{self.varied[0]}-{self.varied[1]}"

    @property
    def name(self) -> str:
        seed = "" if self.seed is None else f"__seed-{self.seed}"
        return f"{self.modality}__{self.tag}{seed}"

    @property
    def label(self) -> str:
        return ", ".join(f"{a}={v}" for a, v in self.setting)

    @property
    def group(self) -> dict[str, str]:
        if self.varied is None:  # named by its value where the grid has a single axis
            value = self.setting[0][1] if len(self.setting) == 1 else "FFNet"
            return {"axis": "baseline", "value": str(value)}
        return {"axis": self.varied[0], "value": str(self.varied[1])}


def read_sweep(path: Path) -> dict:
    """The sweep file as a mapping; with ``extends: <parent sweep file>`` the parent's, with this
    file's top-level keys replacing the parent's, except ``modalities``: only the modalities named
    here are kept, each with the keys given here replacing the parent's (e.g. a longer ``budget``)."""
    if not path.is_file():
        raise FileNotFoundError(f"no sweep file at {path}")
    spec = yaml.safe_load(path.read_text())
    if "extends" not in spec:
        return spec
    parent = read_sweep(Path(resolve_path(spec.pop("extends"), path.resolve().parent)))
    merged = {**parent, **spec}
    if "modalities" in spec:
        unknown = set(spec["modalities"]) - set(parent["modalities"])
        if unknown:
            raise ValueError(f"{path}: extends a sweep without modalities {sorted(unknown)}")
        merged["modalities"] = {
            name: {**parent["modalities"][name], **(changes or {})}
            for name, changes in spec["modalities"].items()
        }
    return merged


def load_sweep(path: Path) -> dict:
    spec = read_sweep(path)
    for key in ("grid", "modalities"):
        if key not in spec:
            raise ValueError(f"{path}: missing top-level key {key!r} (needs grid and modalities)")
    unknown = set(spec) - KEYS
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; valid: {', '.join(sorted(KEYS))}"
        )
    if spec.get("mode", "one-at-a-time") not in ("one-at-a-time", "product"):
        raise ValueError(f"{path}: mode must be 'one-at-a-time' or 'product', got {spec['mode']!r}")
    folder = path.resolve().parent
    for name, mod in spec["modalities"].items():
        missing = {"config", "metric", "knobs"} - set(mod)
        if missing:
            raise ValueError(f"{path}: modality {name!r} lacks {sorted(missing)}")
        unknown = set(mod) - MODALITY_KEYS
        if unknown:
            raise ValueError(
                f"{path}: modality {name!r} has unknown keys {sorted(unknown)}; "
                f"valid: {', '.join(sorted(MODALITY_KEYS))}"
            )
        if mod.get("goal", "max") not in ("max", "min"):
            raise ValueError(f"{path}: modality {name!r}: goal must be max or min")
        axes = set(spec["grid"]) - set(mod["knobs"])
        if axes and spec.get("mode", "one-at-a-time") == "product":
            raise ValueError(f"{path}: modality {name!r} has no knob for axes {sorted(axes)}")
        configs = mod["config"] if isinstance(mod["config"], list) else [mod["config"]]
        mod["config_names"] = configs
        mod["config"] = [resolve_path(c, folder) for c in configs]
    missing = [
        c for mod in spec["modalities"].values() for c in mod["config"] if not Path(c).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{path}: config files not found: {missing} (relative paths are read from the sweep "
            "file's folder, the repository root two levels up, then the current folder)"
        )
    spec["folder"] = str(folder)
    spec["name"] = path.stem
    for key in ("records", "report"):
        if spec.get(key):
            spec[key] = resolve_path(spec[key], folder, must_exist=False)
    return spec


def resolve_path(name: str, folder: Path, must_exist: bool = True) -> str:
    """An absolute path: as given if absolute, else found beside the sweep file, in the repository
    root above ``experiments/sweeps/`` or in the current folder; a path that need not exist yet
    (records, reports) is placed in the repository root when the sweep file sits in one."""
    path = Path(name)
    if path.is_absolute():
        return str(path)
    repo = folder.parent.parent
    for candidate in (folder / path, repo / path, Path.cwd() / path):
        if candidate.exists():
            return str(candidate.resolve())
    if not must_exist:
        return str(repo / path if (repo / "pyproject.toml").is_file() else Path.cwd() / path)
    return str(path)


def skipped_axes(spec: dict) -> dict[str, list[str]]:
    """Per modality, the axes it has no knob for (their cells are skipped there)."""
    return {
        m: [a for a in spec["grid"] if a not in mod["knobs"]]
        for m, mod in spec["modalities"].items()
    }


def cells(spec: dict) -> list[Cell]:
    """Every cell of every modality and seed; a modality's own ``grid`` entries replace the
    sweep's values of those axes (e.g. kernel sizes of a 1D model).  A cell's ``order`` (axis,
    then value position) lines up the rows of different modalities in the tables."""
    out = []
    seeds = spec.get("seeds") or [None]
    axes = list(spec["grid"])
    single = spec.get("mode", "one-at-a-time") == "one-at-a-time"
    for modality, mod in spec["modalities"].items():
        grid: dict[str, list] = {**spec["grid"], **mod.get("grid", {})}
        base = {a: grid[a][0] for a in axes}
        if single:
            settings = [(base, None, 0)] + [
                ({**base, a: v}, (a, v), 1000 * (i + 1) + j)
                for i, a in enumerate(axes) if a in mod["knobs"]
                for j, v in enumerate(grid[a]) if j
            ]  # fmt: skip
        else:
            combos = itertools.product(*(grid[a] for a in axes))
            settings = [(dict(zip(axes, c, strict=True)), None, k) for k, c in enumerate(combos)]
        skip = mod.get("skip", {})
        for setting, varied, order in settings:
            if not any(v in skip.get(a, []) for a, v in setting.items()):
                cell = Cell(modality, tuple(setting.items()), None, varied, order, single)
                out += [replace(cell, seed=seed) for seed in seeds]
    return out


def cell_args(cell: Cell, spec: dict) -> list[str]:
    """The arguments that define a cell's run (configs by their names in the sweep file)."""
    mod = spec["modalities"][cell.modality]
    args = []
    for module in spec.get("imports", []):
        args += ["--import", module]
    for config in mod["config_names"]:
        args += ["--config", config]
    args += list(mod.get("budget", []))
    if cell.seed is not None:
        args.append(f"--seed_everything={cell.seed}")
    for axis, value in cell.setting:
        knob = mod["knobs"].get(axis)
        text = mod.get("values", {}).get(axis, {}).get(value, value)
        if knob is None or text in (DEFAULT, None):
            continue
        args += [k.format(text) for k in ([knob] if isinstance(knob, str) else knob)]
        args += mod.get("extra", {}).get(axis, {}).get(value, [])
    return args


def cell_command(cell: Cell, spec: dict, folder: Path) -> list[str]:
    """The full command line of one cell (a ``fit`` of its modality, tested afterwards)."""
    mod = spec["modalities"][cell.modality]
    configs = dict(zip(mod["config_names"], mod["config"], strict=True))
    args = cell_args(cell, spec)
    args = [configs.get(a, a) if i and args[i - 1] == "--config" else a for i, a in enumerate(args)]
    return [
        sys.executable,
        "-m",
        f"metamixer.{cell.modality}",
        "fit",
        *args,
        f"--trainer.default_root_dir={folder}",
        f"--name={cell.name}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={folder}",
        "--test_after_fit=true",
    ]


def records_root(spec: dict, out: Path) -> Path:
    return Path(spec.get("records") or out / spec["name"] / "records")


def record_path(cell: Cell, spec: dict, out: Path) -> Path:
    seed = "seed-default" if cell.seed is None else f"seed-{cell.seed}"
    return records_root(spec, out) / cell.modality / cell.tag / seed / results.RECORD


def finished(cell: Cell, spec: dict, out: Path) -> dict | None:
    """The cell's record if it ran with the same arguments, else ``None``."""
    path = record_path(cell, spec, out)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("cell_args") == cell_args(cell, spec) else None


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
        keep = ("config", "config_sha256", "data", "wall_seconds", "seed", "hardware")
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


def metric_name(modality: str, mod: dict) -> str:
    return f"{modality} {mod['metric']}"


def write_reports(records: list[dict], folder: Path, spec: dict) -> str:
    """``results.csv`` (one row per run), ``results.md`` (the grouped table, also returned) and
    one figure per axis, from the sweep's records."""
    folder.mkdir(parents=True, exist_ok=True)
    axes = list(spec["grid"])
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["modality", "axis", "value", "seed", "metric", "result", "commit"])
        for r in sorted(records, key=lambda r: (r["modality"], r["order"], str(r["seed"]))):
            ((metric, value),) = r["metrics"].items()
            writer.writerow(
                [
                    r["modality"],
                    r["group"]["axis"],
                    r["group"]["value"],
                    r["seed"],
                    metric,
                    value,
                    (r.get("code") or {}).get("commit"),
                ]
            )
    table = results.markdown(results.readme_table(records)) + "\n"
    (folder / "results.md").write_text(table)
    for axis in axes:
        plot_axis(records, axis, spec, folder / f"axis-{axis}.png")
    return table


def plot_axis(records: list[dict], axis: str, spec: dict, path: Path) -> None:
    """One panel per modality with records on ``axis``: every seed's metric per value (dots) and
    the mean ± std (bar), the baseline's mean ± std as a band.  No such modality: no figure."""
    from .plots import _pyplot, save_figure

    plt = _pyplot()
    on_axis = {
        r["modality"] for r in records if not r.get("reference") and r["group"]["axis"] == axis
    }
    modalities = [m for m in spec["modalities"] if m in on_axis]
    if not modalities:
        path.unlink(missing_ok=True)  # a figure from an earlier report
        return
    fig, panels = plt.subplots(
        1, len(modalities), figsize=(3.6 * len(modalities), 3.2), squeeze=False
    )
    for ax, modality in zip(panels[0], modalities, strict=True):
        mine = sorted((r for r in records if r["modality"] == modality), key=lambda r: r["order"])
        base = next((r["group"]["value"] for r in mine if r.get("reference")), "FFNet")
        by_label: dict[str, list[float]] = {base: []}  # the baseline first
        for r in mine:
            if r.get("reference") or r["group"]["axis"] == axis:
                by_label.setdefault(r["group"]["value"], []).append(
                    next(iter(r["metrics"].values()))
                )
        for i, values in enumerate(by_label.values()):
            if not values:
                continue
            mean, std, _ = results.stats(values)
            if i == 0:
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
            color = "black" if i == 0 else "tab:blue"
            ax.errorbar([i], [mean], yerr=[std], fmt="s", color=color, capsize=3)
            ax.scatter([i] * len(values), values, s=8, color="tab:gray", zorder=3)
        labels = list(by_label)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        metric = spec["modalities"][modality]["metric"]
        goal = spec["modalities"][modality].get("goal", "max")
        ax.set_title(
            f"{modality}: {metric} ({'higher' if goal == 'max' else 'lower'} is better)", fontsize=8
        )
    fig.suptitle(f"{spec['name']}: {axis} (trained here, seeds as dots)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


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
    return (
        f"{name}: {metric} recorded {recorded['metrics'][metric]:.4g}, rerun {row['value']:.4g} "
        f"(difference {delta:+.3g}; the cell's seed spread: std {spread:.3g} over {n} seeds)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="sweep YAML, e.g. experiments/sweeps/smoke.yaml")
    parser.add_argument("--out", default="runs/sweeps", help="run folders (logs, checkpoints)")
    parser.add_argument(
        "--parallel", type=int, help="concurrent cells (default: the file's, ≤ cores)"
    )
    parser.add_argument("--modalities", nargs="+", help="run only these modalities' cells")
    parser.add_argument("--cells", nargs="+", metavar="PATTERN",
                        help="run only the cells whose tag matches (e.g. baseline 'kernel-*')")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print every cell's command and state; run nothing"
    )
    parser.add_argument(
        "--report", action="store_true", help="only write the reports from the records"
    )
    parser.add_argument("--rerun", metavar="CELL", help="run one recorded cell again and compare")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.rerun:
        try:
            print(rerun(Path(args.sweep), args.rerun, out, threads=os.cpu_count() or 1))
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        return
    try:
        rows, table = run_sweep(
            Path(args.sweep),
            out,
            args.parallel,
            args.dry_run,
            args.modalities,
            args.report,
            args.cells,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.dry_run:
        return
    print(table)
    failed = [r for r in rows if r["value"] is None]
    if failed:
        summary = "\n".join(
            f"  {r['modality']} {r['setting']} seed {r['seed']}: {r['error']}" for r in failed
        )
        raise SystemExit(
            f"{len(failed)} of {len(rows)} cells failed (run again to retry them):\n{summary}"
        )


if __name__ == "__main__":
    main()
