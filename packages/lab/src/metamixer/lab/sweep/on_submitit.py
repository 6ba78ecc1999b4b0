"""The ``slurm`` and ``submitit-local`` executors: the cells as one submitit job array.

Options (the sweep file's ``executor: {slurm: ...}`` or ``--slurm.KEY VALUE``): submitit's shared
parameters as they are (``timeout_min``, ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``), any
other key is a SLURM parameter of submitit's (``partition``, ``account``, ``qos``, ``constraint``,
``array_parallelism``, ``additional_parameters``, ...).  ``submitit-local`` reads the same section
and ignores the SLURM-only keys: it runs the very job pickles a cluster would, as local processes.

Every submitted job is noted in a journal (``<sweep out>/submitit/journal/<cell>.json``).  A driver
started again (after it was killed, or its login session ended) takes back each journalled job of
a cell still without a record: a finished job's result is collected, a pending or running SLURM
job is waited for, a lost one (e.g. a local job killed with its driver) is submitted again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from metamixer.core.atomic import write_text
from metamixer.lab.sweep.job import CellJob, ExecutorError, Outcome, execute, last_line

GENERIC = {"timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "name", "stderr_to_stdout"}
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}
WEEK_MIN = 7 * 24 * 60  # submitit's local jobs stop after 2 minutes unless told otherwise


def slurm_state(job: submitit.Job) -> str:
    """The job's state from ``sacct`` (submitit's), or from ``squeue`` where SLURM keeps no
    accounting (``sacct`` refuses; ``squeue`` knows pending and running jobs only)."""
    state = (job.state or "UNKNOWN").split()[0]
    if state != "UNKNOWN":
        return state
    try:
        queued = subprocess.run(["squeue", "-h", "-j", job.job_id, "-o", "%T"],
                                capture_output=True, text=True, timeout=60).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return state
    return queued[0] if queued else state


class SubmititExecutor:
    def __init__(self, cluster: str, options: dict[str, Any], folder: Path):
        self.cluster = cluster  # "slurm" or "local"
        self.name = "slurm" if cluster == "slurm" else "submitit-local"
        self.options = dict(options)
        self.folder = Path(folder) / "submitit"
        self.poll_s = 1.0 if cluster == "local" else 15.0
        self.params = {k if k in GENERIC else f"slurm_{k}": v for k, v in self.options.items()}
        if cluster == "local":
            self.params.setdefault("timeout_min", WEEK_MIN)
        self.params.setdefault("name", "metamixer-sweep")
        # submitit checks the parameter names and types (SLURM's too) without a cluster
        with tempfile.TemporaryDirectory() as scratch:
            try:
                self._executor(Path(scratch), "local")
            except (NameError, ValueError, AssertionError) as err:
                raise ValueError(f"{self.name} executor: {str(err).splitlines()[0]}") from None

    def _executor(self, folder: Path, cluster: str) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        executor.update_parameters(**self.params)
        return executor

    def threads(self) -> int:
        return int(self.options.get("cpus_per_task") or 1)

    def timeout_s(self) -> float | None:
        return None  # the scheduler's (SLURM's time, submitit's local controller)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "the cluster's defaults"
        where = "a SLURM job array" if self.cluster == "slurm" else "local submitit jobs"
        return f"{self.name}: {where} ({shown}); job files in {self.folder}"

    def check(self) -> None:
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ExecutorError(
                "the slurm executor needs `sbatch` on PATH: run the sweep on a SLURM login node "
                "(or try the same job pickles here with --executor submitit-local)"
            )

    # the journal of submitted jobs, one file per cell
    def _journal(self, job: CellJob) -> Path:
        return self.folder / "journal" / f"{job.name}.json"

    def _taken_back(self, job: CellJob) -> submitit.Job | None:
        """A job submitted for this cell (with this command) by an earlier driver that still
        counts: finished with a result, or (SLURM) pending or running."""
        path = self._journal(job)
        if not path.is_file():
            return None
        note = json.loads(path.read_text())
        if note.get("command") != list(job.command) or note.get("cluster") != self.cluster:
            return None
        folder = self.folder / "%j"  # submitit's folder template, as the job was submitted with
        old: submitit.Job
        if self.cluster == "slurm":
            old = submitit.SlurmJob(folder=folder, job_id=note["job_id"])
        else:
            old = submitit.LocalJob(folder=folder, job_id=note["job_id"])
        if old.paths.result_pickle.exists():
            return old
        return old if self.cluster == "slurm" and slurm_state(old) in ALIVE else None

    def run(self, jobs: list[CellJob]) -> Iterator[tuple[CellJob, Outcome]]:
        running: list[tuple[CellJob, submitit.Job]] = []
        fresh = []
        for job in jobs:
            old = self._taken_back(job)
            if old is None:
                fresh.append(job)
            else:
                running.append((job, old))
        if fresh:
            executor = self._executor(self.folder, self.cluster)
            submitted = executor.map_array(execute, fresh)  # one job array
            for job, sub in zip(fresh, submitted, strict=True):
                note = {"job_id": sub.job_id, "cluster": self.cluster, "command": list(job.command)}
                write_text(self._journal(job), json.dumps(note))
                running.append((job, sub))
        by_id = {id(sub): job for job, sub in running}
        for sub in submitit.helpers.as_completed(
            [s for _, s in running], poll_frequency=self.poll_s
        ):
            job = by_id[id(sub)]
            yield job, self._outcome(sub)
            self._journal(job).unlink(missing_ok=True)  # recorded by the driver: no longer pending

    def _outcome(self, sub: submitit.Job) -> Outcome:
        """The job's outcome; a job that failed outside the cell (time limit, preemption, node
        failure, cancelled) is a failure with submitit's reason."""
        try:
            outcome = sub.result()
        except FailedJobError as err:  # raised in the job, e.g. submitit's time limit
            trace = str(err).split("-" * 22)
            reason = last_line(trace[1] if len(trace) > 2 else str(err))
        except UncompletedJobError as err:  # no result at all: killed, cancelled, node failure
            reason = " ".join(str(err).splitlines()[:2])
        else:
            assert isinstance(outcome, Outcome)
            return outcome
        return Outcome(None, error=f"{self.name} job {sub.job_id}: {reason}")
