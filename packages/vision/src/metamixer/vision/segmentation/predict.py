"""Segment your own images with a trained checkpoint: one palette PNG per image.

    python -m metamixer.vision.segmentation.predict RUN/checkpoints/last.ckpt photos/

(``predict`` with any config writes the same files through ``PaletteWriter``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from PIL import Image

from metamixer.lab.cli import run_cli
from metamixer.lab.writers import PredictionFiles, input_names, predict_command

from .__main__ import main as cli_main
from .data import distinct_palette


class PaletteWriter(PredictionFiles):
    """``predictions/<input>.png``: class indices as a palette PNG (the data module's palette),
    the input's relative path kept."""

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        labels = prediction["label"]
        names = input_names(batch, indices)
        palette = getattr(trainer.datamodule, "palette", None) or distinct_palette(256)
        flat = [v for colour in palette for v in colour]
        for label, name in zip(labels, names, strict=True):
            path = self.folder / Path(str(name)).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(label.cpu().numpy(), mode="P")
            image.putpalette(flat + [0] * (768 - len(flat)))
            image.save(path)


main = predict_command(cli_main, "vision.segmentation")

if __name__ == "__main__":
    run_cli(main)
