"""``predict``'s files for super-resolution: one 8-bit PNG per input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

from metamixer.lab.writers import PredictionFiles, input_names
from metamixer.superres.data import write_image


def sr_name(name: str, scale: int) -> str:
    """``photos/a.jpg`` -> ``photos/a_x2.png`` (the input's relative path kept)."""
    path = Path(name)
    return str(path.with_name(f"{path.stem}_x{scale}.png"))


class SuperResolutionWriter(PredictionFiles):
    """``predictions/<input>_x<scale>.png`` (8-bit PNG, the input's relative path kept)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        if prediction is None:
            return
        names = input_names(batch, indices)
        for sr, name in zip(prediction, names, strict=True):
            write_image(self.folder / sr_name(str(name), self.scale), sr)
