"""Prediction that writes files, shared by the modalities.

``PredictionFiles`` is the base of each modality's ``BasePredictionWriter``: it writes into the
run folder's ``predictions/`` and reports what it wrote.  ``predict_command`` is the short
command every modality offers for the user's own files::

    python -m metamixer.<modality>.predict RUN/checkpoints/best.ckpt INPUT [CLI options]

It re-runs ``predict`` with the run's saved ``config.yaml``, the checkpoint and
``--data.predict_path INPUT``; the predictions land in a new ``predict-<time>`` folder beside the run.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class InputFiles(Dataset):
    """The user's files for ``predict``: one file or every matching file under a folder (sorted).

    ``load(path)`` turns a file into a tensor; a file it cannot read comes back as ``None`` with a
    warning naming it, and ``collate_inputs`` lists it in ``unreadable``.
    """

    def __init__(self, path: Path, extensions: tuple[str, ...], load: Callable[[Path], Tensor]):
        if path.is_file():
            self.files = [path]
        elif path.is_dir():
            self.files = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions)
        else:
            raise FileNotFoundError(f"predict_path {path} is neither a file nor a folder")
        if not self.files:
            raise ValueError(f"{path} holds no files of type {', '.join(extensions)}")
        self.root = path if path.is_dir() else path.parent
        self.load = load

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor | None, str]:
        path = self.files[index]
        name = str(path.relative_to(self.root))
        try:
            return self.load(path), name
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping unreadable file {path}: {err}", stacklevel=1)
            return None, name


def collate_inputs(batch: list[tuple[Tensor | None, str]]) -> dict[str, Any]:
    """``input`` (the readable tensors stacked), their ``name``s, and the ``unreadable`` names."""
    good = [(x, name) for x, name in batch if x is not None]
    return {
        "input": torch.stack([x for x, _ in good]) if good else torch.empty(0),
        "name": [name for _, name in good],
        "unreadable": [name for x, name in batch if x is None],
    }


def input_files_loader(
    path: str, extensions: tuple[str, ...], load: Callable[[Path], Tensor], *,
    batch_size: int = 1, num_workers: int = 0,
) -> DataLoader:  # fmt: skip
    return DataLoader(
        InputFiles(Path(path), extensions, load), batch_size=batch_size, num_workers=num_workers,
        collate_fn=collate_inputs,
    )  # fmt: skip


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
        self.folder: Path | None = None
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


def predict_command(modality_main: Callable[[list[str]], object], modality: str) -> Callable:
    """The short ``predict`` command of a modality (see the module docstring)."""

    def main(argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(
            prog=f"python -m metamixer.{modality}.predict",
            description=f"Apply a trained {modality} checkpoint to your own files.",
        )
        parser.add_argument("checkpoint", help="RUN/checkpoints/<name>.ckpt of a fit run")
        parser.add_argument("input", help="the file or folder to predict")
        args, extra = parser.parse_known_args(argv)
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint at {checkpoint}")
        config = checkpoint.resolve().parent.parent / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(
                f"no config.yaml in {config.parent} (the checkpoint's run folder); run "
                f"`python -m metamixer.{modality} predict --config CONFIG --ckpt_path {checkpoint} "
                f"--data.predict_path {args.input}` instead"
            )
        modality_main(["predict", "--config", str(config), f"--ckpt_path={checkpoint}",
                       f"--data.predict_path={args.input}", *extra])  # fmt: skip

    return main
