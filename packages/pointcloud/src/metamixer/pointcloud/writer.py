"""``predict``'s files for point-cloud segmentation: the user's LAS/LAZ file with predicted
classes (chunked: memory bounded by the chunk, not the file), or per-scene label arrays."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer

from metamixer.lab.writers import PredictionFiles


class PointLabelWriter(PredictionFiles):
    """Collects per-point labels; a LAS/LAZ input (``predict_path``) is written back with ASPRS
    classes (the first ASPRS code of each label in ``class_map``; unlabelled points keep theirs);
    otherwise each evaluation scene's labels go to ``labels_<batch>.npy``."""

    def __init__(
        self, predict_path: str | None = None, class_map: Mapping[int, int] | None = None
    ) -> None:
        super().__init__()
        self.predict_path, self.class_map = predict_path, dict(class_map or {})

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
        path = self.predict_path
        if path is not None and self.labels:
            import laspy

            las = laspy.read(path)
            to_asprs: dict[int, int] = {}
            for asprs, label in sorted(self.class_map.items()):
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
