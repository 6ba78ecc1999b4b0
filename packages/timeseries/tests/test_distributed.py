"""Two CPU processes (gloo, DDP) under `fabric run` train like one process with the same global batch.

SyncBatchNorm needs GPUs, so each process normalises its half batch; the runs are compared by
their test error (within 5 %) and by the DDP world size, not bit for bit.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = [
    "--data.data_path=weather.csv", "--data.dataset=custom", "--data.pred_len=24",
    "--data.shuffle=false", "--model.arch=ffnet_ts_test", "--model.arch_args.dim=16",
    "--model.arch_args.token_kernels=13", "--model.arch_args.channel_kernels=13",
    "--model.arch_args.mlp_drop=0.0", "--model.plot_series=0", "--trainer.max_epochs=2",
    "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
    "--test_after_fit=true",
]  # fmt: skip


def free_port() -> int:
    """A port nobody listens on now (a fixed one collides with parallel runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script() -> str:
    path = shutil.which("metamixer-timeseries") or str(
        Path(sys.executable).parent / "metamixer-timeseries"
    )
    assert Path(path).exists(), "console script metamixer-timeseries not installed (make env)"
    return path


def test_fabric_run_two_processes_matches_one_process(custom_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = [*ARGS, f"--data.root={custom_root}"]
    single = subprocess.run(
        [sys.executable, "-m", "metamixer.timeseries", "fit", *common, "--data.batch_size=64",
         f"--trainer.default_root_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    fabric = Path(sys.executable).parent / "fabric"

    def two_processes() -> subprocess.CompletedProcess:
        shutil.rmtree(tmp_path / "two", ignore_errors=True)
        return subprocess.run(
            [str(fabric), "run", "--accelerator=cpu", "--devices=2", f"--main-port={free_port()}",
             script(), "fit", *common, "--data.batch_size=32",
             f"--trainer.default_root_dir={tmp_path / 'two'}"],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip

    double = two_processes()
    if double.returncode != 0 and "Signal 6 (SIGABRT)" in double.stderr:
        # a rank aborted in gloo (seen twice in many CI runs, never reproduced alone; the free
        # port can be taken between choosing and binding it): one retry on a new port
        double = two_processes()
    first_errors = [line for line in double.stderr.splitlines() if "Error" in line][:5]
    assert double.returncode == 0, "\n".join(first_errors) + "\n" + double.stderr[-3000:]
    assert "MEMBER: 2/2" in double.stderr + double.stdout, (
        "the Trainer did not join the 2 processes"
    )
    folders = list((tmp_path / "two").rglob("fit-*"))
    assert len(folders) == 1, f"the two processes chose different run folders: {folders}"
    one, two = (
        json.loads(next((tmp_path / d).rglob("metrics.json")).read_text()) for d in ("one", "two")
    )
    assert two["test/mse"] == pytest.approx(one["test/mse"], rel=0.05)


def test_launcher_and_trainer_devices_must_agree(monkeypatch):
    from metamixer.lab.launcher import join_launcher

    class Trainer(dict):
        __getattr__ = dict.get

        def __setattr__(self, key, value):
            self[key] = value

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    auto = Trainer(devices="auto", num_nodes=1, strategy="auto")
    join_launcher(auto)
    assert (auto["devices"], auto["num_nodes"], auto["strategy"]) == (2, 1, "ddp")
    with pytest.raises(ValueError, match=r"2 processes per node but trainer\.devices=1"):
        join_launcher(Trainer(devices=1, num_nodes=1, strategy="auto"))
