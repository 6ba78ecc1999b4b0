"""One cell's process, as every executor runs it: ``execute(job)`` runs the cell's command in its
run folder and returns an :class:`Outcome` (exit code, the run's record, the error's last line and,
for executors whose workers do not share the driver's files, the log).

This module is what the executors ship to their workers (submitit pickles ``execute`` into its job
files, Ray sends it as a remote task), so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RECORD = "record.json"  # a run's record (metamixer.lab.results.RECORD)


class ExecutorError(RuntimeError):
    """The executor cannot run here (not installed, cluster unreachable); nothing was started."""


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to run one cell: its name, its command after the interpreter (the
    worker's own Python runs it), its run folder, extra environment and an optional time limit."""

    name: str
    command: tuple[str, ...]
    folder: str
    env: tuple[tuple[str, str], ...] = ()
    pythonpath: str = ""  # prepended to the worker's PYTHONPATH (the sweep file's folder)
    timeout_s: float | None = None


@dataclass
class Outcome:
    """How a cell's run ended.  ``run`` is the run's record (``None`` unless it exited 0 with
    one); ``error`` the reason it failed; ``log`` the log's text when the executor ships it home."""

    code: int | None
    run: dict | None = None
    error: str | None = None
    log: str | None = None
    host: str = field(default_factory=socket.gethostname)


# looked up once here: the child calls it between fork and exec, where loading a library could
# deadlock on a lock another thread held at the fork
_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # a cell outlives neither its worker nor the driver's thread that started it (a killed
    # SLURM/Ray/submitit job or driver leaves no orphaned training behind)
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def execute(job: CellJob, ship_log: bool = False) -> Outcome:
    """Run the cell in ``job.folder`` (``log.txt`` there) and return its outcome."""
    folder = Path(job.folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return Outcome(None, error=f"cannot create the run folder on {socket.gethostname()}: {err}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(job.env)}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [job.pythonpath, os.environ.get("PYTHONPATH")])
    )
    log_path = folder / "log.txt"
    timed_out = False
    with open(log_path, "w") as log:
        try:
            code: int | None = subprocess.run(
                [sys.executable, *job.command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=job.timeout_s,
                preexec_fn=_die_with_parent,
            ).returncode
        except subprocess.TimeoutExpired:  # run() has killed the cell
            code, timed_out = None, True
    text = log_path.read_text(errors="replace")
    found = sorted(folder.rglob(RECORD), key=lambda p: p.stat().st_mtime)
    run = json.loads(found[-1].read_text()) if code == 0 and found else None
    if timed_out:
        error = f"time limit: killed after {job.timeout_s:g} s (last output: {last_line(text)})"
    elif run is None:
        error = f"exit {code}: {last_line(text)}"
    else:
        error = None
    return Outcome(code, run, error, text if ship_log else None)
