"""Sweep executors: the smoke sweep through submitit's local executor (the SLURM job pickles) and a
real Ray cluster on 127.0.0.1, each with a cell killed mid-run and a driver killed and restarted,
its records compared with a local run; and the refusals before any cell starts."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from metamixer.lab.sweep import main
from metamixer.lab.sweep.executors import executor_options, option_flags
from metamixer.lab.sweep.lock import sweep_lock

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "sweeps" / "smoke.yaml"
TIMESERIES = {
    "config": ["experiments/timeseries/base.yaml", "experiments/timeseries/elecdemand.yaml"],
    "metric": "test/mse",
    "knobs": {"act": "--model.arch_args.token_acts={}"},
}


def one_cell_sweep(tmp_path: Path, budget: list[str], **top) -> Path:
    """A sweep of one time-series cell (baseline only) with this budget."""
    spec = {"grid": {"act": ["gelu"]}, "modalities": {"timeseries": {**TIMESERIES, "budget": budget}},
            **top}  # fmt: skip
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def refused(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    return str(exit_.value.code)


def no_cell_started(out: Path) -> bool:
    return not list(out.rglob("log.txt")) and not list(out.rglob("*.pkl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- options and refusals (fast) ----


def test_executor_options_come_from_the_file_and_the_command_line_wins(tmp_path):
    flags = option_flags(["--slurm.partition", "gpu", "--slurm.timeout_min=30", "--ray.resources",
                          "{accel: 1}"])  # fmt: skip
    assert flags == {
        "slurm": {"partition": "gpu", "timeout_min": 30},
        "ray": {"resources": {"accel": 1}},
    }
    spec = {"executor": {"name": "slurm", "slurm": {"partition": "cpu", "gpus_per_node": 1}}}
    slurm = {"slurm": flags["slurm"]}
    assert executor_options(spec, None, slurm) == ("slurm", {"partition": "gpu", "gpus_per_node": 1,
                                                             "timeout_min": 30})  # fmt: skip
    assert executor_options(spec, "submitit-local", None)[1] == spec["executor"]["slurm"]
    assert executor_options({}, None, None) == ("local", {})
    with pytest.raises(ValueError, match=r"--slurm\.\* options given but the executor is local"):
        executor_options({}, None, {"slurm": {"partition": "gpu"}})  # not on the login node
    with pytest.raises(ValueError, match="unrecognised argument '--slurmpartition'"):
        option_flags(["--slurmpartition", "gpu"])
    bad = one_cell_sweep(tmp_path, [], executor={"name": "slurm", "slurn": {}})
    with pytest.raises(SystemExit, match=r"executor has unknown keys \[.slurn.\]"):
        main([str(bad), "--dry-run"])


def test_dry_run_shows_which_executor_would_run_which_cells(tmp_path):
    out = tmp_path / "out"
    # its own process: in one with OpenVINO loaded (the runtime tests), pytest's capture of
    # submitit's setup fails at teardown
    dry = subprocess.run(
        [sys.executable, "-m", "metamixer.lab.sweep", str(SMOKE), "--out", str(out), "--dry-run",
         "--executor", "slurm", "--slurm.partition", "gpu", "--slurm.gpus_per_node", "1",
         "--slurm.timeout_min", "20"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("executor: slurm: a SLURM job array (partition=gpu, gpus_per_node=1")
    assert sum("(to run on slurm)" in line for line in lines) == 4
    assert not out.exists()  # nothing submitted, nothing written
    with pytest.raises(SystemExit, match="Unknown argument 'partitio' for executor 'slurm'"):
        main([str(SMOKE), "--out", str(out), "--executor", "slurm", "--slurm.partitio", "gpu"])


@pytest.mark.parametrize("name,module,extra", [("slurm", "submitit", "slurm"),
                                               ("submitit-local", "submitit", "slurm"),
                                               ("ray", "ray", "ray")])  # fmt: skip
def test_an_executor_that_is_not_installed_is_one_line_naming_the_extra(
    name, module, extra, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    message = refused(capsys, SMOKE, "--out", tmp_path, "--executor", name)
    assert (
        message
        == f"error: the {name} executor needs {module}: pip install 'metamixer-lab[{extra}]'"
    )
    assert no_cell_started(tmp_path)


def test_a_missing_sbatch_is_refused_before_any_cell_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch (nor anything else) on PATH
    message = refused(capsys, SMOKE, "--out", tmp_path, "--executor", "slurm")
    assert "the slurm executor needs `sbatch` on PATH" in message and "\n" not in message
    assert no_cell_started(tmp_path)


def test_an_unreachable_ray_address_is_refused_before_any_cell_starts(tmp_path, capsys):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.time()
    message = refused(
        capsys, SMOKE, "--out", tmp_path, "--executor", "ray", "--ray.address", address
    )
    assert message.startswith(f"error: cannot reach the Ray cluster at {address}")
    assert "ray start --head" in message and time.time() - start < 30
    assert no_cell_started(tmp_path)


def test_a_second_driver_on_the_same_sweep_is_refused_naming_the_lock(tmp_path, capsys):
    with sweep_lock(tmp_path / "smoke") as lock:  # a first driver holds the sweep
        message = refused(capsys, SMOKE, "--out", tmp_path)
        assert message == (f"error: another driver is running this sweep (pid {os.getpid()} on "
                           f"{os.uname().nodename}); it holds the lock {lock}")  # fmt: skip
        assert no_cell_started(tmp_path)
    dry = subprocess.run([sys.executable, "-m", "metamixer.lab.sweep", str(SMOKE), "--out",
                          str(tmp_path), "--dry-run"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert dry.returncode == 0  # released with its driver (a killed driver's lock goes too)


def test_a_cell_past_its_time_limit_is_recorded_failed_with_the_reason_and_retried(tmp_path):
    budget = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--model.plot_series=0",
              "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
              "--model.arch_args.dim=8"]  # fmt: skip
    path = one_cell_sweep(tmp_path, budget)

    def sweep(*extra):
        command = [sys.executable, "-m", "metamixer.lab.sweep", str(path), "--out", str(tmp_path)]
        return subprocess.run(
            [*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=300
        )

    first = sweep("--local.time", "0.03")  # 1.8 s: not even long enough to import torch
    assert first.returncode != 0 and "1 of 1 cells failed" in first.stderr
    result = json.loads((tmp_path / "one" / "timeseries__baseline" / "result.json").read_text())
    assert result["value"] is None and result["error"].startswith("time limit: killed after 1.8 s")
    assert not list((tmp_path / "one" / "records").rglob("record.json"))
    log = tmp_path / "one" / "timeseries__baseline" / "log.txt"
    before = log.stat().st_mtime_ns
    second = sweep("--local.time", "0.03")  # retried (and too long again)
    assert second.returncode != 0 and log.stat().st_mtime_ns != before


# ---- the smoke sweep through each executor (slow) ----


def cell_pids(out: Path, cell: str) -> list[int]:
    """The training processes of one cell of a sweep run under ``out``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"--name={cell}".encode() in args and any(str(out).encode() in a for a in args):
            pids.append(int(proc.name))
    return pids


def wait_for(condition, what: str, timeout: float = 900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def driver(out: Path, *extra: str) -> subprocess.Popen:
    path = out.with_suffix(f".{time.time_ns()}.log")
    with open(path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "metamixer.lab.sweep", str(SMOKE), "--out", str(out), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    process.log = path  # type: ignore[attr-defined]
    return process


def records(out: Path) -> dict[str, dict]:
    root = out / "smoke" / "records"
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("record.json")}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> dict[str, dict]:
    """The smoke sweep's records from the local executor (the reference)."""
    out = tmp_path_factory.mktemp("local")
    done = subprocess.run([sys.executable, "-m", "metamixer.lab.sweep", str(SMOKE), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return records(out)


def kill_a_cell_and_the_driver_then_resume(out: Path, *extra: str) -> dict[str, dict]:
    """Run the smoke sweep with these executor arguments: kill one cell's training mid-run (it is
    recorded as failed), kill the driver (and everything in its session) once a first cell is
    recorded, start it again; it finishes the sweep without redoing recorded cells."""
    victim = "timeseries__act-relu"
    first = driver(out, *extra)
    pids = wait_for(lambda: cell_pids(out, victim), f"{victim} to start")
    time.sleep(3)  # mid-run
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    result = out / "smoke" / victim / "result.json"
    wait_for(result.is_file, f"{victim}'s failure to be recorded")
    failed = json.loads(result.read_text())
    assert failed["value"] is None and "exit -9" in failed["error"], failed
    done = wait_for(lambda: records(out), "a first record")
    os.killpg(first.pid, signal.SIGKILL)  # the driver, killed halfway
    first.wait()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "smoke" / "records").rglob("record.json")}
    assert "timeseries/act-relu/seed-default/record.json" not in done
    second = driver(out, *extra)
    assert second.wait(timeout=1800) == 0, second.log.read_text()[-3000:]  # type: ignore[attr-defined]
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was run again"
    retried = json.loads(result.read_text())
    assert retried["value"] is not None and retried["error"] is None
    root = out / "smoke" / "records"
    assert not [
        p for p in root.rglob("*") if p.is_file() and p.name != "record.json"
    ]  # no temporaries
    return records(out)


def same_records(ours: dict[str, dict], local: dict[str, dict]) -> None:
    assert sorted(ours) == sorted(local) and len(ours) == 4
    for name, record in ours.items():
        assert record["cell_args"] == local[name]["cell_args"]
        assert record["metrics"] == local[name]["metrics"], name  # one thread each: same numbers
        assert record["hardware"]["threads"] == local[name]["hardware"]["threads"] == 1


@pytest.mark.slow
def test_the_smoke_sweep_on_submitit_local_survives_a_killed_cell_and_a_killed_driver(
    tmp_path, local_run
):
    out = tmp_path / "out"
    ours = kill_a_cell_and_the_driver_then_resume(out, "--executor", "submitit-local")
    same_records(ours, local_run)
    assert not list((out / "smoke" / "submitit" / "journal").iterdir())  # every job collected
    assert list((out / "smoke" / "submitit").glob("*/*_result.pkl"))  # ran as submitit jobs


@pytest.mark.slow
def test_a_submitit_job_past_its_time_limit_is_recorded_failed_with_submitits_reason(tmp_path):
    path = one_cell_sweep(tmp_path, ["--trainer.max_epochs=200", "--model.plot_series=0"])
    command = [sys.executable, "-m", "metamixer.lab.sweep", str(path), "--out", str(tmp_path),
               "--executor", "submitit-local", "--slurm.timeout_min", "1"]  # fmt: skip
    # submitit's local controller signals the job 30 s before its 1 minute are up
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "1 of 1 cells failed" in run.stderr
    result = json.loads((tmp_path / "one" / "timeseries__baseline" / "result.json").read_text())
    assert result["error"].startswith("submitit-local job ")
    assert "Job not requeued because: timed-out and not checkpointable." in result["error"]
    assert not cell_pids(tmp_path, "timeseries__baseline")  # the cell went with its job


@pytest.fixture
def ray_cluster():
    """A real Ray head on 127.0.0.1 (2 CPUs), in its own session; stopped by killing it."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "Ray", 120)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_the_smoke_sweep_on_a_ray_cluster_survives_a_killed_cell_and_a_killed_driver(
    tmp_path, local_run, ray_cluster
):
    out = tmp_path / "out"
    ours = kill_a_cell_and_the_driver_then_resume(
        out, "--executor", "ray", "--ray.address", ray_cluster
    )
    same_records(ours, local_run)
    for cell in ("vision__baseline", "timeseries__act-relu"):
        log = (out / "smoke" / cell / "log.txt").read_text()
        assert "test/" in log  # the worker's log, sent home


SLURM_CONF = """ClusterName=metamixer-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName={host} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def slurm_cluster(monkeypatch):
    """A real one-node SLURM cluster from Debian's packages (slurmctld, slurmd, munged; apt-get
    install slurmctld slurmd slurm-client munge), on its own ports, its configuration in a
    temporary folder (``SLURM_CONF``), no accounting (``sacct`` refuses; ``squeue`` answers)."""
    daemons = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
    if not all(shutil.which(d) for d in daemons) or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurmctld, slurmd, slurm-client and munge packages")
    folder = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # munge's socket path is short
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0], dir=folder,
                                      ctld_port=free_port(), d_port=free_port()))  # fmt: skip
    monkeypatch.setenv("SLURM_CONF", str(conf))
    started = []
    try:
        subprocess.run(["munged", "-f", f"--key-file={key}", f"--socket={folder}/munge.sock",
                        f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid",
                        f"--seed-file={folder}/munged.seed"], check=True)  # fmt: skip
        started.append(folder / "munged.pid")
        subprocess.run(["slurmctld", "-i"], check=True)
        started.append(folder / "slurmctld.pid")
        subprocess.run(["slurmd"], check=True)
        started.append(folder / "slurmd.pid")
        wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True,
                                                  text=True).stdout, "the SLURM node", 60)  # fmt: skip
        yield folder
    finally:
        subprocess.run(["scancel", "--user=root"], capture_output=True)  # this cluster's jobs only
        time.sleep(2)
        for pid_file in reversed(started):
            if pid_file.is_file():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        time.sleep(2)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_the_smoke_sweep_on_a_real_slurm_cluster_takes_back_its_jobs_after_a_killed_driver(
    tmp_path, local_run, slurm_cluster
):
    out = tmp_path / "out"
    ours = kill_a_cell_and_the_driver_then_resume(
        out, "--executor", "slurm", "--slurm.partition", "debug", "--slurm.timeout_min", "30"
    )
    same_records(ours, local_run)
    jobs = out / "smoke" / "submitit"
    assert not list((jobs / "journal").iterdir())
    # four cells in one array, then the killed cell alone: the jobs the killed driver left
    # running were taken back, not submitted again
    assert len(list(jobs.glob("*/*_result.pkl"))) == 5


@pytest.mark.slow
def test_a_slurm_job_past_its_time_limit_is_recorded_failed_and_retried(tmp_path, slurm_cluster):
    path = one_cell_sweep(tmp_path, ["--trainer.max_epochs=200", "--model.plot_series=0"])
    command = [sys.executable, "-m", "metamixer.lab.sweep", str(path), "--out", str(tmp_path),
               "--executor", "slurm", "--slurm.partition", "debug", "--slurm.timeout_min", "1",
               "--slurm.signal_delay_s", "30"]  # fmt: skip
    # SLURM signals the job (USR2) about 30 s before its minute is up; submitit stops it
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode != 0 and "1 of 1 cells failed" in run.stderr, run.stderr[-2000:]
    result = json.loads((tmp_path / "one" / "timeseries__baseline" / "result.json").read_text())
    assert result["error"].startswith("slurm job ") and "timed-out" in result["error"], result
    assert not list((tmp_path / "one" / "submitit" / "journal").iterdir())
    assert not cell_pids(tmp_path, "timeseries__baseline")
    log = tmp_path / "one" / "timeseries__baseline" / "log.txt"
    before = log.stat().st_mtime_ns
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert (
        again.returncode != 0 and log.stat().st_mtime_ns != before
    )  # retried (and again too long)


def test_a_restarted_driver_takes_back_finished_jobs_and_resubmits_lost_ones(tmp_path):
    """The journal of submitted jobs, with cheap stand-in cells (a line of Python each): a job that
    finished while no driver was there is collected, not run again; a lost one is submitted again."""
    import submitit

    from metamixer.lab.sweep.job import CellJob, execute
    from metamixer.lab.sweep.on_submitit import SubmititExecutor

    def job(name: str) -> CellJob:
        return CellJob(name, ("-c", f"print('{name} ran')"), str(tmp_path / name))

    runner = SubmititExecutor("local", {}, tmp_path)
    finished, lost = job("finished"), job("lost")
    # an earlier driver submitted both, then died: one job ended, the other died with it
    early = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="local")
    early.update_parameters(timeout_min=5)
    done = early.submit(execute, finished)
    done.result()
    for cell, job_id in ((finished, done.job_id), (lost, "999999999")):
        note = {"job_id": job_id, "cluster": "local", "command": list(cell.command)}
        (tmp_path / "submitit" / "journal").mkdir(parents=True, exist_ok=True)
        (tmp_path / "submitit" / "journal" / f"{cell.name}.json").write_text(json.dumps(note))
    (tmp_path / "finished" / "log.txt").unlink()  # were it run again, its log would come back
    outcomes = {j.name: o for j, o in runner.run([finished, lost])}
    assert outcomes["finished"].error == "exit 0: finished ran"  # the earlier job's outcome
    assert not (tmp_path / "finished" / "log.txt").exists()  # ... not run again
    assert outcomes["lost"].error == "exit 0: lost ran"  # a stand-in cell writes no record
    assert (tmp_path / "lost" / "log.txt").read_text() == "lost ran\n"
    assert not list((tmp_path / "submitit" / "journal").iterdir())


def test_local_cells_take_the_threads_the_sweep_was_started_with(monkeypatch):
    from metamixer.lab.sweep.executors import LocalExecutor

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert LocalExecutor(1, {}).threads() == (os.cpu_count() or 1)  # the cores, shared
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. to leave a core to something else
    assert LocalExecutor(1, {}).threads() == 1
