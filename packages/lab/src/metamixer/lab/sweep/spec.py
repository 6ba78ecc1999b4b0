"""A sweep file and its cells: reading and checking the file, planning the cells, each cell's
command line and where its record lives."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from metamixer.lab import results
from metamixer.lab.sweep.executors import check_section

KEYS = {"grid", "modalities", "mode", "parallel", "imports", "seeds", "records", "report",
        "extends", "executor"}  # fmt: skip


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
    if "executor" in spec:
        check_section(path, spec["executor"])
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
    absent = [
        c for mod in spec["modalities"].values() for c in mod["config"] if not Path(c).is_file()
    ]
    if absent:
        raise FileNotFoundError(
            f"{path}: config files not found: {absent} (relative paths are read from the sweep "
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


def metric_name(modality: str, mod: dict) -> str:
    return f"{modality} {mod['metric']}"
