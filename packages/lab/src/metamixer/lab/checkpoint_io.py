"""Checkpoints written atomically and read weights-only (the Trainer's checkpoint plugin)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from metamixer.core.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed to disk, then renamed:
    a crash never leaves a half-written ``last.ckpt``.  Loading is ``weights_only`` (no pickled
    code runs)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
