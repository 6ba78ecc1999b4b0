"""The user's own files as ``predict`` input: one file or every matching file under a folder; a
file that cannot be read is skipped with a warning and listed, never stops the run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
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
