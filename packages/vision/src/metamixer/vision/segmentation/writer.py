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
    """``predictions/<input>.png``: the predicted classes as a palette PNG (the data's ``palette``,
    else distinct colours), the input's relative path kept.  Pixel values follow the data's
    annotation convention: class ``c`` is written as ``c + label_offset`` (ADE20K layout: 1…N,
    0 = "other" is never predicted; Cityscapes: train ids 0…18)."""

    def __init__(
        self, palette: Sequence[tuple[int, int, int]] | None = None, label_offset: int = 0
    ) -> None:
        super().__init__()
        self.label_offset = label_offset
        self.palette = [(0, 0, 0)] * label_offset + list(palette or distinct_palette(256))

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        labels = prediction["label"]
        names = input_names(batch, indices)
        flat = [v for colour in self.palette for v in colour]
        for label, name in zip(labels, names, strict=True):
            path = self.folder / Path(str(name)).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            values = (label.cpu() + self.label_offset).numpy().astype("uint8")
            image = Image.fromarray(values, mode="P")
            image.putpalette((flat + [0] * 768)[:768])
            image.save(path)
