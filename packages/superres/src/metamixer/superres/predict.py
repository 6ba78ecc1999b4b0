"""Upscale your own images with a trained checkpoint (one file or a folder; unreadable files are
skipped and listed).

    python -m metamixer.superres.predict RUN/checkpoints/last.ckpt photos/ [--model.tile 256]

(``predict`` with any config writes the same files through ``SuperResolutionWriter``.)
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer

from metamixer.lab.cli import run_cli
from metamixer.lab.writers import PredictionFiles, input_names, predict_command

from .__main__ import main as cli_main
from .data import write_image
from .tools import sr_name


class SuperResolutionWriter(PredictionFiles):
    """``predictions/<input>_x<scale>.png`` (8-bit PNG, the input's relative path kept)."""

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        if prediction is None:
            return
        scale = trainer.lightning_module.hparams.scale
        names = input_names(batch, indices)
        for sr, name in zip(prediction, names, strict=True):
            write_image(self.folder / sr_name(str(name), scale), sr)


main = predict_command(cli_main, "superres")

if __name__ == "__main__":
    run_cli(main)
