"""Prediction writers: ``PredictionFiles`` is the base of every task's ``BasePredictionWriter``;
it writes into the run folder's ``predictions/`` and lists the inputs that could not be read.
A writer gets what it needs from the data (class names, a palette, an inverse transform) as
arguments, handed over by the command line (the task's ``handoffs``); it imports nothing of the
command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


def input_names(batch: Any, indices: Any) -> list[str]:
    """The names of a batch's predicted inputs: the user's readable files (possibly none, when
    every file of the batch was unreadable), else ``image<index>`` for a dataset split."""
    if isinstance(batch, dict) and "name" in batch:
        return [str(name) for name in batch["name"]]
    return [f"image{i}" for i in indices]


class PredictionFiles(BasePredictionWriter):
    """A writer whose files go to ``<run folder>/predictions``; unreadable inputs are listed in
    ``unreadable.txt`` instead of stopping the run."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.folder = Path("predictions")  # set to the run folder's when prediction starts
        self.unreadable: list[str] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder = Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.unreadable = []

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.unreadable:
            (self.folder / "unreadable.txt").write_text("\n".join(self.unreadable) + "\n")
            print(
                f"{len(self.unreadable)} unreadable inputs skipped: see {self.folder}/unreadable.txt"
            )
        print(f"predictions written to {self.folder}")

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
        batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:  # fmt: skip
        if isinstance(batch, dict):
            self.unreadable += batch.get("unreadable", [])
        self.write(trainer, prediction, batch, batch_indices)

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        raise NotImplementedError
