"""``predict``'s files for detection: a COCO results file (boxes, and RLE masks from Mask R-CNN)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer

from metamixer.core.atomic import write_text
from metamixer.lab.writers import PredictionFiles


def coco_results(
    detection: dict[str, Any], image_id: int, category_ids: list[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One image's detections (``boxes`` xyxy, ``labels`` 1…K, ``scores`` and, from a detector
    that predicts them, ``masks`` ``(N, 1, H, W)``) as COCO result entries (``segmentation`` as
    RLE only with masks)."""
    from pycocotools import mask as mask_utils

    boxes = detection["boxes"].detach().float().cpu()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    results: list[dict[str, Any]] = [
        {
            "image_id": image_id,
            "category_id": category_ids[label - 1],
            "bbox": [round(v, 2) for v in box],
            "score": round(float(score), 5),
        }
        for box, label, score in zip(
            boxes.tolist(), detection["labels"].tolist(), detection["scores"].tolist(),
            strict=True,
        )
    ]  # fmt: skip
    if "masks" in detection:
        masks = (detection["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
        for entry, rle in zip(results, rles, strict=True):
            entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return results


class COCOResultsWriter(PredictionFiles):
    """``predictions/results.json``: COCO results (boxes, and RLE masks from Mask R-CNN) of every
    predicted image; each process of a distributed run writes ``results.rank<N>.json`` instead.

    Image ids: a split of the dataset keeps its own; the user's files keep those of the
    annotation file given as ``data.predict_ann`` (matched by ``file_name``), else they are
    numbered 1…N in sorted order.  The user's files' entries also name their ``file_name``."""

    def __init__(self, category_ids: Sequence[int]) -> None:
        super().__init__()
        self.category_ids = list(category_ids)
        self.results: list[dict[str, Any]] = []
        self.files = 0

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.results, self.files = [], 0

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        if "targets" in batch:  # a split of the dataset: its own image ids
            ids = [int(t["image_id"]) for t in batch["targets"]]
            names = [None] * len(ids)
        elif "image_id" in batch:  # the user's files, listed in an annotation file
            names = batch["name"]
            ids = list(batch["image_id"])
        else:  # the user's files, numbered in sorted order
            names = batch["name"]
            ids = list(range(self.files + 1, self.files + 1 + len(names)))
            self.files += len(names)
        for detection, image_id, name in zip(prediction, ids, names, strict=True):
            entries = coco_results(detection, image_id, self.category_ids)
            if name is not None:
                for entry in entries:
                    entry["file_name"] = name
            self.results += entries

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        name = (
            "results.json" if trainer.world_size == 1 else f"results.rank{trainer.global_rank}.json"
        )
        write_text(self.folder / name, json.dumps(self.results))
        super().on_predict_end(trainer, pl_module)
