"""LightningModule for point-cloud semantic segmentation (the authors' ScanNet recipe)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from metamixer.core import build_network

from . import models as _models  # noqa: F401  (registers the sparse FFNet architectures)


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int = -1) -> Tensor:
    """Lovász-softmax loss (Berman et al. 2018), averaged over the classes present in ``labels``."""
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in labels.unique():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors, order = errors.sort(descending=True)
        fg = fg[order]
        intersection = fg.sum() - fg.cumsum(0)
        union = fg.sum() + (1 - fg).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]  # gradient of the Lovász extension
        losses.append(errors @ jaccard)
    return torch.stack(losses).mean()


def iou_from_confusion(confusion: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class IoU and accuracy, mIoU, mAcc and allAcc from a ``(true, pred)`` matrix.

    Classes absent from both truth and prediction are left out of the means (NaN per class).
    """
    c = confusion.double()
    tp, truth, pred = c.diag(), c.sum(1), c.sum(0)
    iou = tp / (truth + pred - tp)
    acc = tp / truth
    return iou, acc, torch.stack([iou.nanmean(), acc.nanmean(), tp.sum() / c.sum()]), truth


class Segmenter(L.LightningModule):
    """Train / evaluate ``SparseFFNet``: cross-entropy + Lovász-softmax, AdamW + OneCycle.

    Args:
        arch: architecture name (``sparse_ffnet``, ``sparse_ffnet_full`` (the authors' full
            convs), ``sparse_ffnet_hybrid``, ``sparse_ffnet_test``; see
            ``metamixer.core.ARCHITECTURES``).
        num_classes: output classes (linked from the data module).
        in_channels: input features per point (linked from the data module).
        arch_args: overrides of the architecture's arguments (e.g. ``enc_depths``,
            ``token_mixers``, ``drop_path_rate``), checked by name.
        lr: peak learning rate (OneCycle), ``block_lr_ratio`` times lower for the FFNet blocks.
        block_lr_ratio: learning-rate ratio of the blocks (the authors: 0.1).
        weight_decay: AdamW weight decay.
        pct_start: OneCycle warm-up share.
        lovasz_weight: weight of the Lovász-softmax loss.
        test_views: test-time augmentation: vote over this many turns of each test scene about
            the vertical axis (2 or 4 are exact on the voxel grid; 1 = off).
    """

    def __init__(
        self,
        arch: str = "sparse_ffnet",
        num_classes: int = 20,
        in_channels: int = 6,
        arch_args: dict[str, Any] | None = None,
        lr: float = 0.006,
        block_lr_ratio: float = 0.1,
        weight_decay: float = 0.05,
        pct_start: float = 0.05,
        lovasz_weight: float = 1.0,
        test_views: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        task = {"in_channels": in_channels, "num_classes": num_classes}
        self.model = build_network(arch, task, arch_args)
        self.val_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=-1)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch["feat"], batch["grid_coord"], batch["batch"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        labels = batch["segment"]
        ce = F.cross_entropy(logits, labels, ignore_index=-1)
        loss = ce + self.hparams.lovasz_weight * lovasz_softmax(logits.softmax(1), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}")
        n = int(batch["offset"].numel())
        self.log_dict({"train/loss": loss, "train/ce": ce}, prog_bar=True, batch_size=n)
        return loss

    def _point_predictions(self, batch: dict[str, Tensor], views: int = 1) -> tuple[Tensor, Tensor]:
        """Predictions for every original point (voxel prediction mapped back) and their labels;
        ``views`` > 1 votes over the scene turned by 360° / views about z (class probabilities
        averaged; exact on the voxel grid for 2 and 4 views)."""
        if views == 1:
            pred = self(batch).argmax(1)
        else:
            normals = getattr(getattr(self.trainer, "datamodule", None), "normal_channels", None)
            pred = sum(
                self(rotate_about_z(batch, k, views, normals)).softmax(1) for k in range(views)
            ).argmax(1)
        if "inverse" in batch:
            return pred[batch["inverse"]], batch["segment_full"]
        return pred, batch["segment"]

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Labels of every point of the batch (``row``: their rows in the input file, if any)."""
        pred, _ = self._point_predictions(batch, self.hparams.test_views)
        return {"label": pred, **({"row": batch["row"]} if "row" in batch else {})}

    def configure_callbacks(self) -> list[L.Callback]:
        """``predict`` writes the labelled points (LAS/LAZ with ``classification``, or NPY)."""
        from .predict import PointLabelWriter

        return [PointLabelWriter()]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_confusion.update(*self._point_predictions(batch))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.test_confusion.update(*self._point_predictions(batch, self.hparams.test_views))

    def _log_confusion(self, confusion: MulticlassConfusionMatrix, prefix: str) -> Tensor:
        iou, acc, (miou, macc, allacc), _ = iou_from_confusion(confusion.compute())
        confusion.reset()
        self.log_dict({f"{prefix}/mIoU": miou.float(), f"{prefix}/mAcc": macc.float(),
                       f"{prefix}/allAcc": allacc.float()}, prog_bar=True)  # fmt: skip
        return torch.stack([iou, acc], 1)

    def on_validation_epoch_end(self) -> None:
        self._log_confusion(self.val_confusion, "val")

    def on_test_epoch_end(self) -> None:
        per_class = self._log_confusion(self.test_confusion, "test")
        names = getattr(self.trainer.datamodule, "classes", None) or [
            str(i) for i in range(self.hparams.num_classes)
        ]
        for name, (iou, _) in zip(names, per_class.tolist(), strict=True):
            self.log(f"test/IoU/{name}", float("nan") if iou != iou else iou)
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if log_dir and self.trainer.is_global_zero:
            write_class_table(Path(log_dir) / "per_class_iou.csv", names, per_class)

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        blocks = [p for n, p in self.named_parameters() if ".blocks." in n]
        others = [p for n, p in self.named_parameters() if ".blocks." not in n]
        optimizer = torch.optim.AdamW(
            [{"params": others, "lr": h.lr}, {"params": blocks, "lr": h.lr * h.block_lr_ratio}],
            lr=h.lr, weight_decay=h.weight_decay, foreach=True,
        )  # fmt: skip
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[h.lr, h.lr * h.block_lr_ratio],
            total_steps=max(2, int(self.trainer.estimated_stepping_batches)),
            pct_start=h.pct_start, anneal_strategy="cos", div_factor=10.0, final_div_factor=1000.0,
        )  # fmt: skip
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def rotate_about_z(
    batch: dict[str, Tensor], k: int, views: int, normals: tuple[int, int] | None
) -> dict[str, Tensor]:
    """The batch turned by ``k · 360° / views`` about z: voxel coordinates (rounded to the grid,
    shifted back to ≥ 0) and, when the features hold normals (``normals`` = their slice), those."""
    if k == 0:
        return batch
    angle = 2 * math.pi * k / views
    c, s = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    coords = (batch["grid_coord"].double() @ turn.T).round().long()
    out = {**batch, "grid_coord": coords - coords.min(0).values}
    if normals is not None:
        feat = batch["feat"].clone()
        lo, hi = normals
        feat[:, lo:hi] = (feat[:, lo:hi].double() @ turn.T).to(feat.dtype)
        out["feat"] = feat
    return out


def write_class_table(path: Path, names: list[str], per_class: Tensor) -> Path:
    """Per-class IoU / accuracy as CSV (atomic write)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "IoU", "accuracy"])
        for name, (iou, acc) in zip(names, per_class.tolist(), strict=True):
            writer.writerow([name, f"{iou:.4f}", f"{acc:.4f}"])
    os.replace(tmp, path)
    return path
