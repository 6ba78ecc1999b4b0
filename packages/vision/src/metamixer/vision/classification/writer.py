"""``predict``'s files for image classification: ``predictions/predictions.csv``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer

from metamixer.lab.writers import PredictionFiles, input_names


class ClassificationWriter(PredictionFiles):
    """``predictions/predictions.csv``: file (or sample index), then the ``top_k`` classes with
    their probabilities."""

    def __init__(self, classes: Sequence[str] | None = None, top_k: int = 5) -> None:
        super().__init__()
        self.classes, self.top_k = classes, top_k

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        prob = prediction["prob"]
        if len(prob) == 0:
            return
        names = self.classes or [str(i) for i in range(prob.shape[1])]
        k = min(self.top_k, prob.shape[1])
        top = prob.topk(k, dim=1)
        ids = input_names(batch, indices)
        path = self.folder / "predictions.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(
                    ["input"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("class", "prob")]
                )
            for item, values, classes in zip(
                ids, top.values.tolist(), top.indices.tolist(), strict=True
            ):
                row = [item]
                for c, p in zip(classes, values, strict=True):
                    row += [names[c], f"{p:.4f}"]
                writer.writerow(row)
