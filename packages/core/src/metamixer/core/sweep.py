"""Cross-modality ablation sweeps over MetaMixer sub-operations.

    python -m metamixer.core.sweep experiments/sweeps/smoke.yaml [--parallel 2] [--out runs/sweeps]

A sweep file declares the ``grid`` (axis -> values; the first value of every axis is the baseline)
and, per modality, the experiment config(s), a small budget, the metric, how each axis maps to
that modality's command-line arguments (``knobs``: one argument or a list), optionally its own
values of some axes (``grid``) and values to skip.  ``imports`` lists modules that every cell
imports first (``--import``), e.g. one that registers a new mixer; the sweep file's folder is on
the cells' ``PYTHONPATH``, so such a module can sit beside it.  ``mode: one-at-a-time`` varies one axis at a time from
the baseline, ``product`` runs the full grid.  Every cell is one ``python -m metamixer.<modality>
fit`` run in its own folder; a cell with a ``result.json`` is done and skipped, so a killed sweep
restarts where it stopped.  Parallel cells share the cores (threads = cores / parallel).  Results:
``results.csv``, ``results.md`` and ``results.png`` (one panel per modality).  A failed cell is
recorded with its error's last line, reported in the summary and run again next time;
``--dry-run`` prints every cell's command.  Config paths are read relative to the sweep file's
folder (or the repository root two levels up, or the current folder) and checked before any cell
starts.

Cells run as subprocesses, so this module imports no modality package.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Cell:
    modality: str
    setting: tuple[tuple[str, object], ...]  # (axis, value) pairs

    @property
    def name(self) -> str:
        return self.modality + "__" + "__".join(f"{a}-{v}" for a, v in self.setting)

    @property
    def label(self) -> str:
        return ", ".join(f"{a}={v}" for a, v in self.setting)


def load_sweep(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no sweep file at {path}")
    spec = yaml.safe_load(path.read_text())
    for key in ("grid", "modalities"):
        if key not in spec:
            raise ValueError(f"{path}: missing top-level key {key!r} (needs grid and modalities)")
    unknown = set(spec) - {"grid", "modalities", "mode", "parallel", "imports"}
    if spec.get("mode", "one-at-a-time") not in ("one-at-a-time", "product"):
        raise ValueError(f"{path}: mode must be 'one-at-a-time' or 'product', got {spec['mode']!r}")
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; valid: grid, modalities, mode, parallel, imports"
        )
    for name, mod in spec["modalities"].items():
        missing = {"config", "metric", "knobs"} - set(mod)
        if missing:
            raise ValueError(f"{path}: modality {name!r} lacks {sorted(missing)}")
        axes = set(spec["grid"]) - set(mod["knobs"])
        if axes:
            raise ValueError(f"{path}: modality {name!r} has no knob for axes {sorted(axes)}")
    spec["folder"] = str(path.resolve().parent)
    missing = []
    for mod in spec["modalities"].values():
        configs = mod["config"] if isinstance(mod["config"], list) else [mod["config"]]
        mod["config"] = [resolve_config(c, path.resolve().parent) for c in configs]
        missing += [c for c in mod["config"] if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: config files not found: {missing} (relative paths are read from the sweep "
            "file's folder, the repository root two levels up, then the current folder)"
        )
    return spec


def resolve_config(config: str, folder: Path) -> str:
    """An absolute config path: as given if absolute, else found beside the sweep file, in the
    repository root above ``experiments/sweeps/`` or in the current folder."""
    path = Path(config)
    if path.is_absolute():
        return str(path)
    for candidate in (folder / path, folder.parent.parent / path, Path.cwd() / path):
        if candidate.is_file():
            return str(candidate.resolve())
    return str(path)


def cells(spec: dict) -> list[Cell]:
    """The cells of every modality; a modality's own ``grid`` entries replace the sweep's values
    of those axes (e.g. kernel sizes of a 1D model)."""
    out = []
    for modality, mod in spec["modalities"].items():
        grid: dict[str, list] = {**spec["grid"], **mod.get("grid", {})}
        axes = list(spec["grid"])
        if spec.get("mode", "one-at-a-time") == "product":
            settings = [
                tuple(zip(axes, v, strict=True))
                for v in itertools.product(*(grid[a] for a in axes))
            ]
        else:
            base = {a: grid[a][0] for a in axes}
            settings = [tuple(base.items())]
            settings += [tuple({**base, a: v}.items()) for a in axes for v in grid[a][1:]]
        skip = mod.get("skip", {})
        out += [Cell(modality, s) for s in settings if not any(v in skip.get(a, []) for a, v in s)]
    return out


def cell_command(cell: Cell, spec: dict, folder: Path) -> list[str]:
    """The full command line of one cell (a ``fit`` of its modality, tested afterwards)."""
    mod = spec["modalities"][cell.modality]
    args = [sys.executable, "-m", f"metamixer.{cell.modality}", "fit"]
    for module in spec.get("imports", []):
        args += ["--import", module]
    for config in mod["config"]:
        args += ["--config", config]
    args += list(mod.get("budget", []))
    for axis, value in cell.setting:
        knob = mod["knobs"][axis]
        args += [k.format(value) for k in ([knob] if isinstance(knob, str) else knob)]
    args += [f"--trainer.default_root_dir={folder}", f"--name={cell.name}",
             "--trainer.enable_progress_bar=false",
             "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
             f"--trainer.logger.save_dir={folder}", "--test_after_fit=true"]  # fmt: skip
    return args


def run_cell(cell: Cell, spec: dict, root: Path, threads: int) -> dict:
    """Run a cell unless it already succeeded; a failed cell is run again."""
    folder = root / cell.name
    result = folder / "result.json"
    if result.exists():
        done = json.loads(result.read_text())
        if done.get("value") is not None:
            return done
    mod = spec["modalities"][cell.modality]
    path = os.pathsep.join(filter(None, [spec["folder"], os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "w") as log:
        code = subprocess.run(
            cell_command(cell, spec, folder), stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    row = {"modality": cell.modality, "setting": cell.label, **dict(cell.setting)}
    found = sorted(folder.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    metrics_file = found[-1] if code == 0 and found else None
    if metrics_file is None:
        lines = [x for x in (folder / "log.txt").read_text().splitlines() if x.strip()]
        last = lines[-1].strip() if lines else "no output"
        row.update(metric=mod["metric"], value=None, error=f"exit {code}: {last}")
    else:
        value = json.loads(metrics_file.read_text()).get(mod["metric"])
        row.update(
            metric=mod["metric"], value=value, error=None if value is not None else "metric missing"
        )
    tmp = folder / ".result.json.tmp"
    tmp.write_text(json.dumps(row))
    os.replace(tmp, result)
    return row


def write_reports(rows: list[dict], root: Path, spec: dict) -> None:
    axes = list(spec["grid"])
    with open(root / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["modality", *axes, "metric", "value", "error"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| modality | setting | metric | value |", "|---|---|---|---|"]
    for r in rows:
        value = f"failed ({r['error']})" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"| {r['modality']} | {r['setting']} | {r['metric']} | {value} |")
    (root / "results.md").write_text("\n".join(lines) + "\n")
    from .plots import _pyplot, save_figure

    plt = _pyplot()
    modalities = list(dict.fromkeys(r["modality"] for r in rows))
    fig, axes_ = plt.subplots(
        1, len(modalities), figsize=(4.5 * len(modalities), 3.8), squeeze=False
    )
    for ax, modality in zip(axes_[0], modalities, strict=True):
        sel = [r for r in rows if r["modality"] == modality and r["value"] is not None]
        ax.barh([r["setting"] for r in sel], [r["value"] for r in sel], color="tab:blue")
        ax.set_title(f"{modality}: {sel[0]['metric'] if sel else ''}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    save_figure(fig, root / "results.png")


def run_sweep(
    path: Path, out: Path, parallel: int | None = None, dry_run: bool = False
) -> list[dict]:
    spec = load_sweep(path)
    cores = os.cpu_count() or 1
    parallel = max(1, min(parallel or spec.get("parallel", cores), cores))
    threads = max(1, cores // parallel)
    root = out / path.stem
    root.mkdir(parents=True, exist_ok=True)
    todo = cells(spec)
    if dry_run:
        for cell in todo:
            print(f"{cell.name}:\n  {shlex.join(cell_command(cell, spec, root / cell.name))}")
        return []
    with ThreadPoolExecutor(parallel) as pool:
        rows = list(pool.map(lambda c: run_cell(c, spec, root, threads), todo))
    write_reports(rows, root, spec)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="sweep YAML, e.g. experiments/sweeps/smoke.yaml")
    parser.add_argument("--out", default="runs/sweeps")
    parser.add_argument(
        "--parallel", type=int, help="concurrent cells (default: the file's, ≤ cores)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print every cell's command and run nothing"
    )
    args = parser.parse_args(argv)
    try:
        rows = run_sweep(Path(args.sweep), Path(args.out), args.parallel, args.dry_run)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.dry_run:
        return
    failed = [r for r in rows if r["value"] is None]
    print((Path(args.out) / Path(args.sweep).stem / "results.md").read_text())
    if failed:
        summary = "\n".join(f"  {r['modality']} {r['setting']}: {r['error']}" for r in failed)
        raise SystemExit(
            f"{len(failed)} of {len(rows)} cells failed (run again to retry them):\n{summary}"
        )


if __name__ == "__main__":
    main()
