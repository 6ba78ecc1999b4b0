"""Label your own LAS/LAZ file with a trained checkpoint: the same file, ``classification``
predicted, written into the run folder (chunked: memory bounded by the chunk, not the file).

    python -m metamixer.pointcloud.predict RUN/checkpoints/last.ckpt tile.laz

(``predict`` with any config writes through ``PointLabelWriter``: without ``data.predict_path``
the labels of every evaluation scene go to ``labels_<batch>.npy``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer

from metamixer.lab.cli import run_cli
from metamixer.lab.writers import PredictionFiles, predict_command

from .__main__ import main as cli_main


class PointLabelWriter(PredictionFiles):
    """Collects per-point labels; a LAS/LAZ input is written back with ASPRS classes (the first
    ASPRS code of each label in the data module's ``class_map``; unlabelled points keep theirs)."""

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.labels: dict[int, int] = {}

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        if "row" not in prediction:
            np.save(self.folder / f"labels_{len(list(self.folder.glob('labels_*')))}.npy",
                    prediction["label"].cpu().numpy())  # fmt: skip
            return
        rows, labels = prediction["row"].tolist(), prediction["label"].tolist()
        self.labels.update(zip(rows, labels, strict=True))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        path = getattr(dm.hparams, "predict_path", None)
        if path is not None and self.labels:
            import laspy

            las = laspy.read(path)
            to_asprs = {}
            for asprs, label in sorted(dm.class_map.items()):
                to_asprs.setdefault(label, asprs)
            classes = np.asarray(las.classification).copy()
            rows = np.fromiter(self.labels, dtype=np.int64, count=len(self.labels))
            labels = np.fromiter(self.labels.values(), dtype=np.int64, count=len(self.labels))
            classes[rows] = np.array([to_asprs[int(v)] for v in labels], dtype=classes.dtype)
            las.classification = classes
            out = self.folder / Path(path).name
            las.write(str(out))
            print(f"{len(rows):,} of {len(classes):,} points labelled: {out}")
        super().on_predict_end(trainer, pl_module)


main = predict_command(cli_main, "pointcloud")

if __name__ == "__main__":
    run_cli(main)
