"""Processes and devices of a run: joining a torchelastic-style launcher (``fabric run``,
``torchrun``) and refusing a precision the device cannot run."""

from __future__ import annotations

import os
from typing import Any

import torch


def launcher_world() -> tuple[int, int] | None:
    """``(processes per node, nodes)`` when started by a torchelastic-style launcher
    (``fabric run``, ``torchrun``), else ``None``."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    world = os.environ.get("WORLD_SIZE")
    if local is None or world is None:
        return None
    local_n, world_n = int(local), int(world)
    return local_n, max(1, world_n // max(1, local_n))


CPU_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "bf16", "64-true", "64")


def check_precision(precision: Any, accelerator: Any) -> None:
    """Refuse a precision the device cannot run, naming the choices (before any work)."""
    if precision is None:
        return
    precision = str(precision)
    on_gpu = torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda", "None")
    if not on_gpu and precision not in CPU_PRECISIONS:
        raise ValueError(
            f"trainer.precision={precision} needs a GPU; on CPU use one of {', '.join(CPU_PRECISIONS)}"
        )
    if on_gpu and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"trainer.precision={precision}: this GPU has no bfloat16; use 16-mixed or 32-true"
        )


def join_launcher(trainer: Any) -> None:
    """Make the Trainer's configuration (``devices``, ``num_nodes``, ``strategy``) agree with a
    torchelastic-style launcher's processes (a contradicting value is an error)."""
    world = launcher_world()
    if world is None:
        return
    per_node, nodes = world
    devices = trainer.get("devices", "auto")
    if devices in ("auto", None, -1, "-1"):
        trainer.devices = per_node
    elif int(devices) != per_node:
        raise ValueError(
            f"the launcher started {per_node} processes per node but trainer.devices={devices}; "
            f"use --trainer.devices {per_node} (or leave it at auto) so that they join one run"
        )
    if trainer.get("num_nodes", 1) in (1, None):
        trainer.num_nodes = nodes
    if per_node * nodes > 1 and trainer.get("strategy", "auto") == "auto":
        trainer.strategy = "ddp"
