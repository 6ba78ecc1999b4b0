"""``predict``'s files for semantic segmentation: one palette PNG per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from PIL import Image

from metamixer.lab.writers import PredictionFiles, input_names
from metamixer.vision.segmentation.data import distinct_palette


class PaletteWriter(PredictionFiles):
    """``predictions/<input>.png``: class indices as a palette PNG (the data's ``palette``, else
    distinct colours), the input's relative path kept."""

    def __init__(self, palette: Sequence[tuple[int, int, int]] | None = None) -> None:
        super().__init__()
        self.palette = list(palette or distinct_palette(256))

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        labels = prediction["label"]
        names = input_names(batch, indices)
        flat = [v for colour in self.palette for v in colour]
        for label, name in zip(labels, names, strict=True):
            path = self.folder / Path(str(name)).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(label.cpu().numpy(), mode="P")
            image.putpalette(flat + [0] * (768 - len(flat)))
            image.save(path)
