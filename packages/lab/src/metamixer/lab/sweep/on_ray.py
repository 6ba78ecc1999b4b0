"""The ``ray`` executor: each cell a Ray task on an existing cluster.

Options (the sweep file's ``executor: {ray: ...}`` or ``--ray.KEY VALUE``): ``address`` (the
cluster's, ``host:port`` of its head or ``ray://host:10001``; default ``$RAY_ADDRESS``, else
``auto``: the cluster started on this machine), ``time`` (minutes per cell; past it the worker kills
the cell, recorded as failed), ``runtime_env``, and every Ray task option as Ray spells it: the
resources one cell takes (``num_cpus``, default 1, also its thread count; ``num_gpus``, ``memory``,
``resources: {name: amount}``), ``max_retries`` (default 0: a failed cell is retried by the next
run of the sweep, like every executor's).

The worker runs the cell in the same run folder path as the driver would (it creates it) and sends
the log and the run's record back; the driver writes both into the run folder and saves the cell's
record, so records come home without a shared file system.  The tasks belong to the driver: a
killed driver's running cells are stopped by Ray, and the next driver submits them again.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import ray

from metamixer.lab.sweep.job import CellJob, ExecutorError, Outcome, execute

OURS = {"address", "time", "runtime_env"}


class RayExecutor:
    name = "ray"

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self.address = str(options.get("address") or os.environ.get("RAY_ADDRESS") or "auto")
        self.task = {"num_cpus": 1, "max_retries": 0,
                     **{k: v for k, v in options.items() if k not in OURS}}  # fmt: skip
        try:  # Ray checks the option names and values (no cluster needed)
            self.remote: Any = ray.remote(execute).options(**self.task)
        except (ValueError, TypeError) as err:
            raise ValueError(f"ray executor: {err}") from None

    def threads(self) -> int:
        return max(1, int(self.task["num_cpus"]))

    def timeout_s(self) -> float | None:
        time = self.options.get("time")
        return None if time is None else 60.0 * float(time)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.task.items())
        limit = "" if self.timeout_s() is None else f", {self.options['time']} min per cell"
        return f"ray: tasks on the cluster at {self.address} ({shown}{limit})"

    def check(self) -> None:
        """Connect to the cluster (refused, naming the address, if it cannot be reached)."""
        hint = "start one with `ray start --head` or pass its head's --ray.address HOST:PORT"
        if self.address != "auto":
            host, _, port = self.address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            except (OSError, ValueError) as err:
                raise ExecutorError(
                    f"cannot reach the Ray cluster at {self.address} ({err}); {hint}"
                ) from None
        try:
            ray.init(
                address=self.address,
                runtime_env=self.options.get("runtime_env"),
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ExecutorError(
                f"cannot connect to the Ray cluster at {self.address} ({err}); {hint}"
            ) from None
        have = ray.cluster_resources()
        for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            if self.task.get(key) and have.get(name, 0) < self.task[key]:
                warnings.warn(
                    f"each cell asks for {key}={self.task[key]} but the Ray cluster at "
                    f"{self.address} has {have.get(name, 0)} {name}: the cells wait for nodes",
                    stacklevel=2,
                )

    def run(self, jobs: list[CellJob]) -> Iterator[tuple[CellJob, Outcome]]:
        if not ray.is_initialized():
            self.check()
        try:
            pending = {self.remote.remote(job, True): job for job in jobs}
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker or its node died, ...
                    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    outcome = Outcome(None, error=f"ray: {type(err).__name__}: {reason}")
                yield job, outcome
        finally:
            ray.shutdown()
