"""LightningModule for detection and instance segmentation: a torchvision detector (Mask R-CNN by
default; Faster R-CNN, RetinaNet, FCOS) + FPN on an FFNet (or any timm) backbone.

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
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, cast

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from timm.optim import param_groups_weight_decay
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from metamixer.lab.knobs import family_knobs
from metamixer.vision.backbone import StartsFromFiles, load_backbone_weights
from metamixer.vision.detection.models import (
    DETECTORS,
    IMAGE_ARGS,
    DetectionNetwork,
    build_detector,
)

#: ``detector_args`` of every detector (``fit --model.detector_args.help DetectorArgs`` lists them)
DetectorArgs = family_knobs("DetectorArgs", list(DETECTORS), exclude=IMAGE_ARGS)

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


def _predicts_masks(detector: str) -> bool:
    """Whether the registered detector ``detector`` predicts instance masks."""
    # every registered detector is a DetectionNetwork
    return cast(type[DetectionNetwork], DETECTORS[detector][0]).masks


class DetectorHparams(Protocol):
    """``Detector.hparams``: its constructor's arguments."""

    arch: str
    num_classes: int
    arch_args: dict[str, Any] | None
    detector: str
    detector_args: Mapping[str, Any] | None  # a DetectorArgs
    init_backbone: str | None
    min_size: tuple[int, ...]
    max_size: int
    data_masks: bool
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_steps: int
    warmup_ratio: float
    milestones: tuple[int, ...]
    gamma: float


class Detector(StartsFromFiles, L.LightningModule):
    """Train / evaluate a torchvision detector on COCO-format data: boxes, and instance masks with
    ``mask_rcnn``.

    Args:
        arch: backbone: a timm model with ``features_only`` (``ffnet_1`` … ``ffnet_4``,
            ``ffnet_test``, or a peer such as ``convnext_tiny``).
        num_classes: object categories, background not counted (linked from the data module).
        arch_args: overrides of the backbone architecture's arguments (e.g. ``drop_path_rate``).
        detector: the detector on the backbone: ``mask_rcnn`` (boxes + masks), ``faster_rcnn``,
            ``retinanet`` or ``fcos`` (boxes only); see ``metamixer.vision.detection.models``.
        detector_args: overrides of the detector's arguments (its one spec, checked by name):
            the pyramid (``fpn_channels``, ``out_norm``, ``norm_eval``, ``out_indices``,
            ``extra_levels``), ``score_thresh``, ``nms_thresh``, ``detections_per_image`` and
            each detector's own (``box_head_dim``, ``mask_head_dim``, ``rpn_proposals``,
            ``anchor_scale``, ``center_sampling_radius``, …).
        init_backbone: local classification weights for the backbone (authors' release, our export
            or an ``ImageClassifier`` checkpoint); ``None`` = from scratch.  Read to start training
            only, not when the module is rebuilt from its own checkpoint.
        min_size: short side(s) of the resized images (linked from ``data.train_scales``).
        max_size: cap on the long side (linked from ``data.max_size``).
        data_masks: whether the data has instance masks (linked from ``data.has_masks``); a
            detector that predicts masks refuses data without them.
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
        detector: str = "mask_rcnn",
        # a TypedDict built at run time (jsonargparse reads it for the CLI), not a static type
        detector_args: DetectorArgs | None = None,  # type: ignore[valid-type]
        init_backbone: str | None = None,
        min_size: tuple[int, ...] = (800,),
        max_size: int = 1333,
        data_masks: bool = True,
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
        given: list[str] = sorted(set(detector_args or {}) & set(IMAGE_ARGS))
        if given:
            raise ValueError(
                f"detector_args.{given[0]} is set by the data (data.train_scales, data.max_size)"
            )
        if detector in DETECTORS and _predicts_masks(detector) and not data_masks:
            box_only = ", ".join(n for n in DETECTORS if not _predicts_masks(n))
            raise ValueError(
                f"{detector} predicts instance masks but the data gives none (its annotations "
                "have no 'segmentation', or data.with_masks is false); choose a box-only "
                f"detector: --model.detector one of {box_only}"
            )
        self.model = build_detector(
            detector, arch, num_classes, arch_args,
            {**(detector_args or {}), "min_size": tuple(min_size), "max_size": max_size},
        )  # fmt: skip
        #: whether the detector predicts instance masks (then mask AP is evaluated too)
        self.masks = bool(getattr(self.model, "masks", False))
        iou_types: tuple[Literal["bbox", "segm"], ...] = (
            ("bbox", "segm") if self.masks else ("bbox",)
        )
        self.val_map = MeanAveragePrecision(iou_type=iou_types, backend="pycocotools")
        self.test_map = MeanAveragePrecision(iou_type=iou_types, backend="pycocotools")

    @property
    def hp(self) -> DetectorHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(DetectorHparams, self.hparams)

    def load_start_files(self) -> None:
        """``init_backbone`` into the backbone, when a run starts without a checkpoint."""
        if self.hp.init_backbone is not None:
            # build_detector builds a DetectionNetwork (a registered detector)
            backbone = cast(DetectionNetwork, self.model).backbone
            load_backbone_weights(backbone.body, self.hp.init_backbone)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image (eval mode): ``boxes`` xyxy in the image's own pixels, ``labels``
        1…K, ``scores`` and (Mask R-CNN) ``masks`` ``(N, 1, H, W)`` probabilities."""
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["images"]
        keys = ("boxes", "labels", "masks") if self.masks else ("boxes", "labels")
        targets = [
            {k: t[k] for k in keys} for t in batch["targets"]
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

    def _metric_inputs(
        self, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        preds: list[dict[str, Tensor]] = [
            {
                "boxes": d["boxes"].float().cpu(),
                "scores": d["scores"].float().cpu(),
                "labels": d["labels"].cpu(),
            }
            for d in detections
        ]
        truth: list[dict[str, Tensor]] = [
            {
                "boxes": t["boxes"].cpu(),
                "labels": t["labels"].cpu(),
                "iscrowd": t["iscrowd"].cpu(),
                "area": t["area"].cpu(),
            }
            for t in targets
        ]
        if self.masks:
            for p, d in zip(preds, detections, strict=True):
                p["masks"] = (d["masks"][:, 0] > 0.5).cpu()
            for t, target in zip(truth, targets, strict=True):
                t["masks"] = target["masks"].bool().cpu()
        return preds, truth

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_map.update(*self._metric_inputs(self(batch["images"]), batch["targets"]))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_map.update(*self._metric_inputs(self(batch["images"]), batch["targets"]))

    def _log_map(self, metric: MeanAveragePrecision, prefix: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval's tables
            values = metric.compute()
        metric.reset()
        iou_types = ("bbox", "segm") if self.masks else ("bbox",)
        for iou_type in iou_types:
            for key, name in METRIC_NAMES.items():
                # torchmetrics prefixes its keys with the IoU type only when it computes several
                value = values.get(f"{iou_type}_{key}" if len(iou_types) > 1 else key)
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

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
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
