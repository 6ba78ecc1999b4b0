"""Test helpers shared by every package's tests (on pytest's ``pythonpath``): BatchNorm
randomisation for fold tests, and the kill-and-resume harness with its fault-injection callback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn


class CrashAt(Callback):
    """Fault injection for resume tests: the process SIGKILLs itself after training step ``step``
    (no cleanup, exactly like an out-of-memory kill or a pre-empted node)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, in place.

    Freshly built BNs are identities in eval mode, which would let a wrong fold pass unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.affine:
                module.weight.copy_(torch.randn(n, generator=gen) * 0.5 + 1.0)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model


def count_modules(model: nn.Module, kind: type[nn.Module] = nn.Module) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _fit(module: str, args: list[str], root: Path, extra: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, "fit", *args, f"--trainer.default_root_dir={root}",
           "--trainer.logger=false", "--trainer.enable_progress_bar=false", *extra]  # fmt: skip
    here = str(Path(__file__).parent)  # CrashAt is imported by the CLI from here
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    # one thread: a CPU reduction's summation order then depends on nothing but the inputs
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def step_checkpoint(every: int) -> list[str]:
    """CLI arguments adding a ``ModelCheckpoint`` that writes ``last.ckpt`` every ``every``
    training steps (mid-epoch too), for ``kill_and_resume(..., steps_per_epoch=...)``."""
    return ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0",
            f"--trainer.callbacks.every_n_train_steps={every}"]  # fmt: skip


def kill_and_resume(
    module: str, args: list[str], root: Path, crash_step: int, *, steps_per_epoch: int | None = None
) -> dict[str, Path]:
    """Train ``python -m module fit args`` three ways and return the final checkpoints:
    uninterrupted, and killed with SIGKILL after ``crash_step`` steps then resumed with
    ``--ckpt_path last``.  ``args`` must make a deterministic CPU run with ``save_last``.

    Fails unless the killed run left a checkpoint from before the kill and the restart restored
    training from it (a fresh deterministic run would end equal too).  With ``steps_per_epoch`` the
    checkpoint must be a mid-epoch one (``args`` add e.g. ``step_checkpoint``) holding the training
    loader's state, and the restart must not warn that the loader is not resumable."""
    full = _fit(module, args, root / "uninterrupted", [])
    if full.returncode != 0:
        raise AssertionError(f"uninterrupted run failed:\n{full.stderr[-3000:]}")
    crash = ["--trainer.callbacks+=metamixer_testing.CrashAt",
             f"--trainer.callbacks.step={crash_step}"]  # fmt: skip
    killed = _fit(module, args, root / "resumed", crash)
    if killed.returncode != -signal.SIGKILL:
        raise AssertionError(
            f"the run was not killed (exit {killed.returncode}):\n{killed.stderr[-3000:]}"
        )
    found = list((root / "resumed").rglob("fit-*/checkpoints/last.ckpt"))
    if not found:
        raise AssertionError(f"the killed run left no checkpoint under {root}: nothing to resume")
    last = found[0]
    left = torch.load(last, map_location="cpu", weights_only=True)
    if not 0 < left["global_step"] <= crash_step:
        raise AssertionError(f"the killed run's checkpoint is at step {left['global_step']}")
    if steps_per_epoch is not None:
        if left["global_step"] % steps_per_epoch == 0:
            raise AssertionError(
                f"the killed run's checkpoint is at step {left['global_step']}, an epoch end "
                f"({steps_per_epoch} steps per epoch): no mid-epoch checkpoint was written"
            )
        if not left["loops"]["fit_loop"]["state_dict"].get("combined_loader"):
            raise AssertionError(
                f"{last} holds no training loader state: it cannot resume mid-epoch"
            )
    resumed = _fit(module, [*args, "--ckpt_path=last"], root / "resumed", [])
    output = resumed.stdout + resumed.stderr
    if resumed.returncode != 0:
        raise AssertionError(f"resumed run failed:\n{resumed.stderr[-3000:]}")
    if "Restored all states from the checkpoint" not in output:
        raise AssertionError(f"the restart did not restore {last}:\n{resumed.stderr[-3000:]}")
    if steps_per_epoch is not None and "not resumable" in output:
        raise AssertionError(f"the training loader could not resume mid-epoch:\n{output[-3000:]}")
    if list((root / "resumed").rglob("fit-*/checkpoints/last.ckpt")) != [last]:
        raise AssertionError("the resumed run did not continue in the interrupted run's folder")
    return {name: next((root / name).rglob("last.ckpt")) for name in ("uninterrupted", "resumed")}


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    """The model weights (and epoch / step counters) of two Lightning checkpoints agree."""
    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert (ca["epoch"], ca["global_step"]) == (cb["epoch"], cb["global_step"])
    for key, value in ca["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(
                cb["state_dict"][key], value, atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}"
            )
