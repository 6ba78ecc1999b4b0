"""LightningModule for point-cloud semantic segmentation (the authors' ScanNet recipe)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from metamixer.core import build_network
from metamixer.core.atomic import atomic_path
from metamixer.lab.knobs import architecture_knobs

from . import models as _models  # noqa: F401  (registers the sparse FFNet architectures)

#: ``arch_args`` (``fit --model.arch_args.help SparseFFNetArgs`` lists them with their types)
SparseFFNetArgs = architecture_knobs("sparse_ffnet")


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


class SegmenterHparams(Protocol):
    """``Segmenter.hparams``: its constructor's arguments."""

    arch: str
    num_classes: int
    in_channels: int
    arch_args: Mapping[str, Any] | None  # a SparseFFNetArgs
    lr: float
    block_lr_ratio: float
    weight_decay: float
    pct_start: float
    lovasz_weight: float
    test_views: int
    test_fragments: int
    classes: list[str] | None
    normal_channels: tuple[int, int] | None


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
        test_fragments: test-time augmentation: also vote over this many passes in which each
            voxel is represented by another of its points, taken in turn (-1: as many passes as
            the fullest voxel has points, so that every point is seen; 1 = off); see
            ``fragment_picks``.
        classes: the classes' names for per-class tables and figures (linked from the data).
        normal_channels: the feature channels holding normals, turned with the scene by
            ``test_views`` (linked from the data; ``None``: no normals).
    """

    def __init__(
        self,
        arch: str = "sparse_ffnet",
        num_classes: int = 20,
        in_channels: int = 6,
        # a TypedDict built at run time (jsonargparse reads it for the CLI), not a static type
        arch_args: SparseFFNetArgs | None = None,  # type: ignore[valid-type]
        lr: float = 0.006,
        block_lr_ratio: float = 0.1,
        weight_decay: float = 0.05,
        pct_start: float = 0.05,
        lovasz_weight: float = 1.0,
        test_views: int = 1,
        test_fragments: int = 1,
        classes: list[str] | None = None,
        normal_channels: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if test_views < 1:
            raise ValueError(f"test_views must be at least 1, got {test_views}")
        if test_fragments < 1 and test_fragments != -1:
            raise ValueError(
                f"test_fragments must be at least 1, or -1 (all), got {test_fragments}"
            )
        self.save_hyperparameters()
        task = {"in_channels": in_channels, "num_classes": num_classes}
        self.model = build_network(arch, task, arch_args)
        self.val_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=-1)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=-1)

    @property
    def hp(self) -> SegmenterHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(SegmenterHparams, self.hparams)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch["feat"], batch["grid_coord"], batch["batch"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        labels = batch["segment"]
        ce = F.cross_entropy(logits, labels, ignore_index=-1)
        loss = ce + self.hp.lovasz_weight * lovasz_softmax(logits.softmax(1), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}")
        n = int(batch["offset"].numel())
        self.log_dict({"train/loss": loss, "train/ce": ce}, prog_bar=True, batch_size=n)
        return loss

    def _point_predictions(
        self, batch: dict[str, Tensor], views: int = 1, fragments: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Predictions for every original point (voxel prediction mapped back) and their labels;
        ``views`` > 1 votes over the scene turned by 360° / views about z (class probabilities
        summed; exact on the voxel grid for 2 and 4 views), ``fragments`` ≠ 1 also over
        fragments (``fragment_votes``; needs ``feat_full``)."""
        if fragments != 1 and "feat_full" in batch:
            return self.fragment_votes(batch, views, fragments).argmax(1), batch["segment_full"]
        pred = self(batch).argmax(1) if views == 1 else self.view_probs(batch, views).argmax(1)
        if "inverse" in batch:
            return pred[batch["inverse"]], batch["segment_full"]
        return pred, batch["segment"]

    def view_probs(self, batch: dict[str, Tensor], views: int) -> Tensor:
        """Class probabilities of every voxel, summed over ``views`` turns about z."""
        normals = self.hp.normal_channels
        return sum(self(rotate_about_z(batch, k, views, normals)).softmax(1) for k in range(views))

    def fragment_votes(self, batch: dict[str, Tensor], views: int, fragments: int) -> Tensor:
        """Summed class probabilities ``(points, classes)`` of every original point of an
        evaluation batch over test-time fragments (Pointcept's test-mode grid sampling).

        Fragment ``f`` gives each voxel the features (``feat_full``) of the point ``fragment_picks``
        chooses; its probabilities (summed over ``views``) go to the chosen points.  A point no
        fragment chooses gets its voxel's, summed over the fragments; with one fragment (the first
        point of every voxel, the plain input) every point thus gets its voxel's prediction."""
        inverse, feat_full = batch["inverse"], batch["feat_full"]
        voxels = torch.zeros(len(batch["feat"]), self.hp.num_classes, device=inverse.device)
        points = voxels.new_zeros(len(inverse), voxels.shape[1])
        chosen = torch.zeros(len(inverse), dtype=torch.bool, device=inverse.device)
        for pick in fragment_picks(inverse, len(voxels), fragments):
            listed = pick >= 0  # voxels with a point of ``inverse`` (all but predict's context)
            feat = batch["feat"].clone()
            feat[listed] = feat_full[pick[listed]].to(feat.dtype)
            probs = self.view_probs({**batch, "feat": feat}, views).float()
            voxels += probs
            points[pick[listed]] += probs[listed]
            chosen[pick[listed]] = True
        points[~chosen] = voxels[inverse[~chosen]]
        return points

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Labels of every point of the batch (``row``: their rows in the input file, if any)."""
        h = self.hp
        pred, _ = self._point_predictions(batch, h.test_views, h.test_fragments)
        return {"label": pred, **({"row": batch["row"]} if "row" in batch else {})}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_confusion.update(*self._point_predictions(batch))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        h = self.hp
        self.test_confusion.update(*self._point_predictions(batch, h.test_views, h.test_fragments))

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
        names = self.hp.classes or [str(i) for i in range(self.hp.num_classes)]
        for name, (iou, _) in zip(names, per_class.tolist(), strict=True):
            self.log(f"test/IoU/{name}", float("nan") if iou != iou else iou)
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if log_dir and self.trainer.is_global_zero:
            write_class_table(Path(log_dir) / "per_class_iou.csv", names, per_class)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
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


def fragment_picks(inverse: Tensor, voxels: int, fragments: int) -> list[Tensor]:
    """The points that represent the voxels in each test-time fragment: ``(voxels,)`` indices into
    ``inverse`` (each original point's voxel), -1 for a voxel none of whose points is listed.

    Fragment ``f`` takes the ``f``-th point of every voxel (its points in their order, modulo
    their count), so fragment 0 is the plain input (the first point) and ``fragments`` = -1 (as
    many as the fullest voxel has points) shows every point at full resolution once."""
    counts = torch.bincount(inverse, minlength=voxels)
    if inverse.numel() == 0:
        return []
    order = torch.argsort(inverse, stable=True)  # points grouped by voxel, in their order
    start = counts.cumsum(0) - counts
    listed = counts > 0
    n = int(counts.max()) if fragments == -1 else fragments
    return [
        torch.where(listed, order[(start + f % counts.clamp(min=1)).clamp(max=len(order) - 1)], -1)
        for f in range(n)
    ]


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
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "IoU", "accuracy"])
        for name, (iou, acc) in zip(names, per_class.tolist(), strict=True):
            writer.writerow([name, f"{iou:.4f}", f"{acc:.4f}"])
    return path
