"""Where a sweep's cells run: the executor seam.

An executor only runs cells: it gets the cells still to run as :class:`~.job.CellJob` s and yields
each one's :class:`~.job.Outcome` as it ends.  Planning, records, resume, retries and reports stay in
:mod:`metamixer.lab.sweep.run`.

``local``           processes on this machine, ``--parallel`` at a time (the default)
``slurm``           a SLURM job array through submitit (needs ``sbatch``; runs must share the files)
``submitit-local``  the same submitit job pickles run as local processes (the SLURM path, tested here)
``ray``             Ray tasks on an existing cluster; the log and record come back to the driver

Options come from the sweep file's ``executor:`` section (``name:`` and one mapping per executor)
and from the command line (``--executor slurm --slurm.partition gpu --slurm.timeout_min 120``);
the command line wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

import yaml

from metamixer.lab.sweep.job import CellJob, ExecutorError, Outcome, execute

NAMES = ("local", "slurm", "submitit-local", "ray")
SECTIONS = {"local": "local", "slurm": "slurm", "submitit-local": "slurm", "ray": "ray"}
EXTRAS = {"slurm": ("submitit", "slurm"), "submitit-local": ("submitit", "slurm"),
          "ray": ("ray", "ray")}  # fmt: skip


class Executor(Protocol):
    name: str

    def threads(self) -> int:
        """Threads each cell may use (its ``OMP_NUM_THREADS``)."""
        ...

    def timeout_s(self) -> float | None:
        """The time limit the worker enforces itself (``None``: none, or the scheduler's)."""
        ...

    def describe(self) -> str:
        """One line for ``--dry-run``: the executor and its settings."""
        ...

    def check(self) -> None:
        """Refuse (:class:`ExecutorError`) before any cell starts if the cells cannot run."""
        ...

    def run(self, jobs: list[CellJob]) -> Iterator[tuple[CellJob, Outcome]]:
        """Run the jobs; yield each with its outcome as it ends, in any order."""
        ...


def parse_value(text: str) -> Any:
    """A command-line option's value, read as YAML (numbers, booleans, lists, mappings)."""
    return yaml.safe_load(text)


def option_flags(tokens: list[str]) -> dict[str, dict[str, Any]]:
    """``--slurm.partition gpu --ray.num_cpus=2`` as ``{"slurm": {"partition": "gpu"}, ...}``;
    refuses anything else."""
    options: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        key, eq, value = token.partition("=")
        section, dot, name = key.removeprefix("--").partition(".")
        if not key.startswith("--") or not dot or section not in SECTIONS.values() or not name:
            raise ValueError(
                f"unrecognised argument {token!r} (executor options are --local.KEY, --slurm.KEY "
                "or --ray.KEY followed by a value)"
            )
        if not eq:
            if i + 1 == len(tokens):
                raise ValueError(f"{key} needs a value")
            value, i = tokens[i + 1], i + 1
        options.setdefault(section, {})[name.replace("-", "_")] = parse_value(value)
        i += 1
    return options


def executor_options(
    spec: dict, name: str | None, flags: dict[str, dict[str, Any]] | None
) -> tuple[str, dict[str, Any]]:
    """The executor's name (``--executor``, else the file's ``executor.name``, else ``local``) and
    its options: the file's section for it, updated by the command line's."""
    section = spec.get("executor") or {}
    name = name or section.get("name") or "local"
    if name not in NAMES:
        raise ValueError(f"unknown executor {name!r}; choose from {', '.join(NAMES)}")
    key = SECTIONS[name]
    stray = sorted(set(flags or {}) - {key})
    if stray:  # e.g. --slurm.partition without --executor slurm: never run on the login node
        raise ValueError(
            f"--{stray[0]}.* options given but the executor is {name}; choose it with "
            f"--executor {stray[0]}"
        )
    return name, {**(section.get(key) or {}), **((flags or {}).get(key) or {})}


def check_section(path: object, section: Any) -> None:
    """The sweep file's ``executor:`` section: ``name`` and one mapping per executor."""
    if not isinstance(section, dict):
        raise ValueError(f"{path}: executor must be a mapping (name: and per-executor options)")
    unknown = set(section) - {"name", *SECTIONS.values()}
    if unknown:
        raise ValueError(
            f"{path}: executor has unknown keys {sorted(unknown)}; valid: name, local, slurm, ray"
        )
    if section.get("name", "local") not in NAMES:
        raise ValueError(f"{path}: executor name must be one of {', '.join(NAMES)}")


class LocalExecutor:
    """Processes on this machine, ``parallel`` at a time, the cores shared among them.  Option:
    ``time`` (minutes per cell; the cell is killed and recorded as failed past it)."""

    name = "local"

    def __init__(self, parallel: int, options: dict[str, Any]):
        unknown = set(options) - {"time"}
        if unknown:
            raise ValueError(f"local executor: unknown options {sorted(unknown)}; valid: time")
        self.parallel = parallel
        self.time = options.get("time")

    def threads(self) -> int:
        """Each cell's share of the cores, or the ``OMP_NUM_THREADS`` the sweep was started with."""
        given = os.environ.get("OMP_NUM_THREADS", "")
        return (
            int(given)
            if given.isdigit() and int(given) > 0
            else max(1, (os.cpu_count() or 1) // self.parallel)
        )

    def timeout_s(self) -> float | None:
        return None if self.time is None else 60.0 * float(self.time)

    def describe(self) -> str:
        limit = "" if self.time is None else f", {self.time} min per cell"
        return (
            f"local: {self.parallel} process(es) at a time, {self.threads()} thread(s) each{limit}"
        )

    def check(self) -> None:
        pass

    def run(self, jobs: list[CellJob]) -> Iterator[tuple[CellJob, Outcome]]:
        with ThreadPoolExecutor(self.parallel) as pool:
            futures = {pool.submit(_announced, job): job for job in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _announced(job: CellJob) -> Outcome:
    print(f"started {job.name}", flush=True)
    return execute(job)


def make_executor(name: str, options: dict[str, Any], parallel: int, folder: Path) -> Executor:
    """The executor ``name`` with its ``options``; ``folder``: where it keeps its own files (job
    pickles, submitit logs, the journal of submitted jobs).  An executor whose package is missing
    is refused in one line naming the extra to install."""
    if name == "local":
        return LocalExecutor(parallel, options)
    module, extra = EXTRAS[name]
    try:
        __import__(module)
    except ImportError:
        raise ExecutorError(
            f"the {name} executor needs {module}: pip install 'metamixer-lab[{extra}]'"
        ) from None
    if name == "ray":
        from metamixer.lab.sweep.on_ray import RayExecutor

        return RayExecutor(options)
    from metamixer.lab.sweep.on_submitit import SubmititExecutor

    return SubmititExecutor("slurm" if name == "slurm" else "local", options, folder)
