"""LightningModule for instance segmentation: Mask R-CNN + FPN on an FFNet (or any timm) backbone.

Optimisation follows the authors' FFNet detection recipe: AdamW (lr 1e-4 for 16 images per step,
weight decay 0.05, none on norms / biases / layer-scales) with mmdetection's step schedule: linear
warmup over ``warmup_steps`` from ``warmup_ratio`` × lr, then × ``gamma`` at each epoch of
``milestones`` (1x: 12 epochs, decay at 8 and 11; 3x: 36 epochs, decay at 27 and 33).  Their
layer-wise learning-rate decay (0.8) is not reproduced.  Gradient clipping: ``trainer.gradient_clip_val``.
"""

from __future__ import annotations

import bisect
import contextlib
import io
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from timm.optim import param_groups_weight_decay
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from metamixer.vision.backbone import StartsFromFiles, load_backbone_weights
from metamixer.vision.detection.models import build_mask_rcnn

#: torchmetrics' result keys → our metric names (``{prefix}/{iou_type}_{name}``)
METRIC_NAMES = {
    "map": "mAP",
    "map_50": "mAP_50",
    "map_75": "mAP_75",
    "map_small": "mAP_s",
    "map_medium": "mAP_m",
    "map_large": "mAP_l",
    "mar_100": "mAR_100",
}


def step_with_warmup(
    step: int,
    *,
    steps_per_epoch: float,
    warmup: int,
    warmup_ratio: float,
    milestones: Sequence[int],
    gamma: float,
) -> float:
    """LR multiplier: linear warmup from ``warmup_ratio`` over ``warmup`` steps, times ``gamma``
    for every milestone epoch reached."""
    epoch = int(step // max(steps_per_epoch, 1e-9))
    factor = gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if step < warmup:
        factor *= warmup_ratio + (1 - warmup_ratio) * step / warmup
    return factor


class Detector(StartsFromFiles, L.LightningModule):
    """Train / evaluate Mask R-CNN on COCO-format data (boxes + instance masks).

    Args:
        arch: backbone: a timm model with ``features_only`` (``ffnet_1`` … ``ffnet_4``,
            ``ffnet_test``, or a peer such as ``convnext_tiny``).
        num_classes: object categories, background not counted (linked from the data module).
        arch_args: overrides of the backbone architecture's arguments (e.g. ``drop_path_rate``).
        init_backbone: local classification weights for the backbone (authors' release, our export
            or an ``ImageClassifier`` checkpoint); ``None`` = from scratch.  Read to start training
            only, not when the module is rebuilt from its own checkpoint.
        fpn_channels: channels of the feature pyramid.
        out_norm: LayerNorm on each backbone stage output before the FPN (as the authors' detection
            backbone).
        norm_eval: keep the backbone's BatchNorm statistics frozen while training (default: trained,
            as the authors do with SyncBatchNorm; set ``trainer.sync_batchnorm`` on several GPUs).
        min_size: short side(s) of the resized images (linked from ``data.train_scales``).
        max_size: cap on the long side (linked from ``data.max_size``).
        box_head_dim: width of the box head's two fully connected layers (torchvision: 1024).
        mask_head_dim: channels of the mask head's four convolutions (torchvision: 256).
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        rpn_proposals: region proposals kept per image (and per pyramid level before NMS) in
            training and in evaluation (torchvision: 2000, 1000).
        box_batch_size_per_image: proposals sampled per image for the box / mask losses.
        box_score_thresh: minimum score of a returned detection.
        detections_per_image: detections kept per image (COCO evaluates 100).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to norms, biases and layer-scales).
        betas: AdamW betas.
        warmup_steps: linear warmup length in optimizer steps.
        warmup_ratio: learning-rate factor at the first step.
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        gamma: learning-rate factor per milestone.
    """

    def __init__(
        self,
        arch: str = "ffnet_2",
        num_classes: int = 80,
        arch_args: dict[str, Any] | None = None,
        init_backbone: str | None = None,
        fpn_channels: int = 256,
        out_norm: bool = True,
        norm_eval: bool = False,
        min_size: tuple[int, ...] = (800,),
        max_size: int = 1333,
        box_head_dim: int = 1024,
        mask_head_dim: int = 256,
        rpn_batch_size_per_image: int = 256,
        rpn_proposals: tuple[int, int] = (2000, 1000),
        box_batch_size_per_image: int = 512,
        box_score_thresh: float = 0.05,
        detections_per_image: int = 100,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 500,
        warmup_ratio: float = 0.001,
        milestones: tuple[int, ...] = (8, 11),
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.model = build_mask_rcnn(
            arch, num_classes, arch_args, fpn_channels=fpn_channels,
            out_norm=out_norm, norm_eval=norm_eval, min_size=min_size, max_size=max_size,
            box_head_dim=box_head_dim, mask_head_dim=mask_head_dim,
            rpn_batch_size_per_image=rpn_batch_size_per_image, rpn_proposals=rpn_proposals,
            box_batch_size_per_image=box_batch_size_per_image, box_score_thresh=box_score_thresh,
            box_detections_per_img=detections_per_image,
        )  # fmt: skip
        self.val_map = MeanAveragePrecision(iou_type=("bbox", "segm"), backend="pycocotools")
        self.test_map = MeanAveragePrecision(iou_type=("bbox", "segm"), backend="pycocotools")

    def load_start_files(self) -> None:
        """``init_backbone`` into the backbone, when a run starts without a checkpoint."""
        if self.hparams.init_backbone is not None:
            load_backbone_weights(self.model.backbone.body, self.hparams.init_backbone)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image (eval mode): ``boxes`` xyxy in the image's own pixels, ``labels``
        1…K, ``scores``, ``masks`` ``(N, 1, H, W)`` probabilities."""
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["images"]
        targets = [
            {k: t[k] for k in ("boxes", "labels", "masks")} for t in batch["targets"]
        ]  # crowd annotations never reach the training split
        losses = self.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step} ({parts}); lower the "
                "learning rate, lengthen the warmup or clip gradients (trainer.gradient_clip_val)"
            )
        n = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        return loss

    @staticmethod
    def _metric_inputs(
        detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        preds = [
            {
                "boxes": d["boxes"].float().cpu(),
                "scores": d["scores"].float().cpu(),
                "labels": d["labels"].cpu(),
                "masks": (d["masks"][:, 0] > 0.5).cpu(),
            }
            for d in detections
        ]
        truth = [
            {
                "boxes": t["boxes"].cpu(),
                "labels": t["labels"].cpu(),
                "masks": t["masks"].bool().cpu(),
                "iscrowd": t["iscrowd"].cpu(),
                "area": t["area"].cpu(),
            }
            for t in targets
        ]
        return preds, truth

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_map.update(*self._metric_inputs(self(batch["images"]), batch["targets"]))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_map.update(*self._metric_inputs(self(batch["images"]), batch["targets"]))

    def _log_map(self, metric: MeanAveragePrecision, prefix: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval's tables
            values = metric.compute()
        metric.reset()
        for iou_type in ("bbox", "segm"):
            for key, name in METRIC_NAMES.items():
                value = values.get(f"{iou_type}_{key}")
                if value is not None:
                    self.log(
                        f"{prefix}/{iou_type}_{name}", value.float(), prog_bar=name == "mAP",
                        sync_dist=False,
                    )  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        return self(batch["images"]) if batch["images"] else []

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        params = param_groups_weight_decay(self.model, h.weight_decay)  # 1-D params: no decay
        optimizer = torch.optim.AdamW(params, lr=h.lr, betas=h.betas)
        total = self.trainer.estimated_stepping_batches
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        milestones, gamma = tuple(h.milestones), h.gamma
        warmup, ratio = h.warmup_steps, h.warmup_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: step_with_warmup(
                step, steps_per_epoch=steps_per_epoch, warmup=warmup, warmup_ratio=ratio,
                milestones=milestones, gamma=gamma,
            ),
        )  # fmt: skip
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
