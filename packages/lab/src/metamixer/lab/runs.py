"""Run folders: every invocation writes into a folder of its own, never into another run's.

``<root>/<modality>/<experiment>/<subcommand>-<YYYYmmdd-HHMMSS>[-n]``: ``root`` is the Trainer's
``default_root_dir`` (``runs`` by default), the experiment is ``--name`` or the last ``--config``
file's stem.  ``fit --ckpt_path last`` continues the experiment's latest fit folder that holds a
``checkpoints/last.ckpt``.  Processes of one distributed run share the folder through the
environment (the Trainer's own launcher) or a marker file written by rank 0 (``torchrun``,
``fabric run``).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

from metamixer.core.atomic import write_text

ENV = "METAMIXER_RUN_DIR"
STARTED = time.time()


def experiment_name(name: str | None, configs: Sequence[object] | None, default: str) -> str:
    if name:
        return name
    paths = [Path(str(getattr(c, "relative", c))) for c in configs or ()]
    return paths[-1].stem if paths else default


def latest_checkpoint(experiment: Path) -> Path | None:
    """``last.ckpt`` of the most recent fit folder of ``experiment`` that has one."""
    found = sorted(experiment.glob("fit-*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def new_run_dir(experiment: Path, subcommand: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run, n = experiment / f"{subcommand}-{stamp}", 1
    while run.exists():
        run, n = experiment / f"{subcommand}-{stamp}-{n}", n + 1
    run.mkdir(parents=True)
    return run


def shared_run_dir(experiment: Path, choose: Callable[[], Path]) -> Path:
    """``choose()`` in the first process; every other process of the run gets the same folder
    (from ``ENV``, which the CLI sets while it runs, or from rank 0's marker file in the
    experiment folder, which a multi-node run shares like its checkpoints)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    rank = int(os.environ.get("RANK", 0))
    marker = None
    if "TORCHELASTIC_RUN_ID" in os.environ or "MASTER_PORT" in os.environ:
        key = os.environ.get("TORCHELASTIC_RUN_ID", "") + os.environ.get("MASTER_PORT", "")
        marker = experiment / f".run-{key}"
    if rank > 0 and marker is not None:
        for _ in range(600):  # a marker older than this process is another run's
            if marker.exists() and marker.stat().st_mtime >= STARTED - 30:
                return Path(marker.read_text())
            time.sleep(0.1)
        raise TimeoutError(f"rank {rank}: rank 0 announced no run folder in {marker}")
    run = choose()
    if marker is not None:  # atomic: the other ranks poll for it and read it as soon as it exists
        write_text(marker, str(run))
    return run


#: the folder a resumed fit keeps the files it will write again in (``n``: the n-th resume)
BEFORE_RESUME = "before-resume-{n}"


def keep_before_resume(run: Path, step: int) -> tuple[Path, list[dict[str, str]]]:
    """Before a fit resumes in ``run`` from a checkpoint at training step ``step``: copy the run
    folder's files (``config.yaml``, ``metrics.csv``, ``record.json``, plots, …; not the
    checkpoints, nor TensorBoard's event files, which are only ever appended to) into
    ``run/before-resume-<n>/``, and return that folder with the rows of ``metrics.csv`` logged
    before ``step`` (the resumed run logs the later ones again)."""
    n = 1
    while (run / BEFORE_RESUME.format(n=n)).exists():
        n += 1
    keep = run / BEFORE_RESUME.format(n=n)
    keep.mkdir()
    for path in sorted(run.iterdir()):
        if path.is_file() and not path.name.startswith("events.out.tfevents"):
            shutil.copy2(path, keep / path.name)
    rows: list[dict[str, str]] = []
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="") as f:
            rows = [
                r
                for r in csv.DictReader(f)
                if r.get("step", "").isdigit() and int(r["step"]) < step
            ]
    return keep, rows


def best_checkpoint(run: Path) -> Path | None:
    """The checkpoint of run folder ``run`` that its ``ModelCheckpoint`` rated best (read from
    ``last.ckpt``), else its only checkpoint besides ``last.ckpt``, else ``last.ckpt``;
    ``None`` when ``run/checkpoints`` holds none."""
    from metamixer.core.checkpoint import read_checkpoint

    folder = run / "checkpoints"
    found = sorted(folder.glob("*.ckpt"))
    if not found:
        return None
    last = folder / "last.ckpt"
    if last.is_file():
        states = read_checkpoint(last).get("callbacks") or {}
        for key, state in states.items():
            if str(key).startswith("ModelCheckpoint") and state.get("best_model_path"):
                best = folder / Path(state["best_model_path"]).name
                if best.is_file():
                    return best
    others = [p for p in found if p != last]
    if len(others) == 1 or not last.is_file():
        return max(others, key=lambda p: p.stat().st_mtime)
    return last


class KeepEarlierRows(Callback):
    """A resumed fit's ``metrics.csv`` starts with the rows the interrupted run logged before its
    checkpoint (the CLI adds it; Lightning's CSV logger would otherwise delete the file)."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        for logger in trainer.loggers:
            if not isinstance(logger, CSVLogger):
                continue
            with warnings.catch_warnings():  # "previous log files will be deleted": not these
                warnings.simplefilter("ignore")
                writer = logger.experiment
            keys = sorted({k for row in self.rows for k in row})
            with open(writer.metrics_file_path, "w", newline="") as f:
                table = csv.DictWriter(f, fieldnames=keys)
                table.writeheader()
                table.writerows(self.rows)
            writer.metrics_keys = keys
        self.rows = []  # once: ``test`` after the fit sets up again


class RunProvenance(Callback):
    """Every checkpoint names the task that wrote it and the modules the run imported (``--import``),
    under ``checkpoint["metamixer"]``: a checkpoint given to another task is named as what it is, and
    a user's mixers are imported again wherever the network is rebuilt from it."""

    def __init__(self, task: str, imports: list[str]) -> None:
        self.task, self.imports = task, imports

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["metamixer"] = {"task": self.task, "imports": self.imports}
