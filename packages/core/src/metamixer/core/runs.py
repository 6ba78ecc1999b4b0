"""Run folders: every invocation writes into a folder of its own, never into another run's.

``<root>/<modality>/<experiment>/<subcommand>-<YYYYmmdd-HHMMSS>[-n]``: ``root`` is the Trainer's
``default_root_dir`` (``runs`` by default), the experiment is ``--name`` or the last ``--config``
file's stem.  ``fit --ckpt_path last`` continues the experiment's latest fit folder that holds a
``checkpoints/last.ckpt``.  Processes of one distributed run share the folder through the
environment (the Trainer's own launcher) or a marker file written by rank 0 (``torchrun``,
``fabric run``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .atomic import write_text

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
