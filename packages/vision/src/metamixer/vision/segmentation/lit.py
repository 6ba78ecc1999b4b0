"""LightningModule for semantic segmentation (the mmseg recipe: AdamW, poly schedule with linear
warmup, cross-entropy with the ignore label, auxiliary head at weight 0.4, mIoU / mAcc / aAcc)."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.ops import Conv2dNormActivation

from metamixer.core import build_network
from metamixer.vision.backbone import StartsFromFiles
from metamixer.vision.segmentation.data import IGNORE
from metamixer.vision.segmentation.inference import confusion_metrics, segment

BLOCK = re.compile(r"stages\.(\d+)\.(?:blocks\.)?(\d+)\.")


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled pixels (0, not NaN, when a crop has none)."""
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp_min(1)


class FCNHead(nn.Sequential):
    """The auxiliary head of the UperNet recipe (training only): 3×3 conv-BN-ReLU, dropout, 1×1
    classifier; smp has none."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            Conv2dNormActivation(in_channels, channels, 3, bias=False),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


def layer_ids(backbone: nn.Module, num_layers: int) -> dict[str, int]:
    """Layer index (0 … ``num_layers`` − 1) of each backbone parameter for layer-wise lr decay:
    the stem is 0, blocks are spread evenly over 1 … ``num_layers`` − 1 in depth order, a stage's
    downsample goes with its first block, parameters after the last block with the last."""
    names = [n for n, _ in backbone.named_parameters()]
    blocks = sorted({(int(m[1]), int(m[2])) for n in names if (m := BLOCK.search(n))})
    order = {b: i for i, b in enumerate(blocks)}
    ids, current = {}, 0
    for name in names:
        m = BLOCK.search(name)
        if m:
            index = order[(int(m[1]), int(m[2]))]
            current = 1 + index * (num_layers - 1) // max(len(blocks), 1)
        elif "stages." in name and blocks:  # a downsample: the next block's layer
            found = re.search(r"stages\.(\d+)\.", name)
            if found is None:
                raise ValueError(f"cannot tell the stage of backbone parameter {name!r}")
            stage = int(found[1])
            first = next((order[b] for b in blocks if b[0] == stage), len(blocks) - 1)
            current = 1 + first * (num_layers - 1) // len(blocks)
        ids[name] = current
    return ids


class SegmentationModel(Protocol):
    """What ``SemanticSegmenter`` uses of its network (``SegmentationNetwork``, ``FFNetSeg``)."""

    feature_channels: list[int]

    @property
    def backbone(self) -> nn.Module: ...

    def __call__(self, images: Tensor) -> Tensor: ...

    def forward_with_features(self, images: Tensor) -> tuple[Tensor, list[Tensor]]: ...

    def load_backbone(self, path: str) -> None: ...


class SemanticSegmenterHparams(Protocol):
    """``SemanticSegmenter.hparams``: its constructor's arguments."""

    arch: str
    num_classes: int
    in_chans: int
    arch_args: dict[str, Any] | None
    init_backbone: str | None
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    head_lr_mult: float
    layer_decay: float
    num_layers: int
    warmup_steps: int
    warmup_ratio: float
    poly_power: float
    aux_channels: int | None
    aux_weight: float
    test_mode: str
    test_scale: int | None
    test_crop: int
    test_stride: int
    test_ratios: tuple[float, ...]
    test_flip: bool
    classes: list[str] | None


class SemanticSegmenter(StartsFromFiles, L.LightningModule):
    """Train / evaluate a segmentation network (UperNet or FPN on an FFNet, or FFNet-seg).

    Args:
        arch: a registered segmentation architecture (``upernet_ffnet_2``, ``fpn_ffnet_1``,
            ``ffnet_seg``, ``upernet_convnext_tiny``, ``*_test``…).
        num_classes: classes (linked from the data module).
        in_chans: image channels (linked from the data module).
        arch_args: overrides of the architecture's arguments, checked by name.
        init_backbone: a local classification checkpoint for the backbone (authors' ImageNet
            release, our export or an ``ImageClassifier`` checkpoint); read to start training
            only, not when the module is rebuilt from its own checkpoint.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        betas: AdamW betas.
        head_lr_mult: learning-rate multiplier of everything outside the backbone.
        layer_decay: layer-wise learning-rate decay of the backbone (1 = none).
        num_layers: layers that ``layer_decay`` spreads the backbone over.
        warmup_steps: linear warmup from ``warmup_ratio`` × lr.
        warmup_ratio: starting fraction of the warmup.
        poly_power: power of the polynomial decay to 0 at the last step.
        aux_channels: width of the auxiliary FCN head on the backbone's stride-16 features
            (UperNet recipe: 256; ``None`` = no auxiliary head).  Used in training only.
        aux_weight: weight of the auxiliary head's loss.
        test_mode: "whole" image or "slide" window inference.
        test_scale: short side the evaluation images are rescaled to (``None``: as they are).
        test_crop: sliding-window size.
        test_stride: sliding-window stride.
        test_ratios: multi-scale test ratios of ``test_scale`` (mmseg: 0.5 … 1.75).
        test_flip: add horizontally flipped predictions.
        classes: the classes' names for per-class tables and figures (linked from the data).
    """

    def __init__(
        self,
        arch: str = "upernet_ffnet_2",
        num_classes: int = 150,
        in_chans: int = 3,
        arch_args: dict[str, Any] | None = None,
        init_backbone: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        head_lr_mult: float = 1.0,
        layer_decay: float = 1.0,
        num_layers: int = 12,
        warmup_steps: int = 1500,
        warmup_ratio: float = 1e-6,
        poly_power: float = 1.0,
        aux_channels: int | None = None,
        aux_weight: float = 0.4,
        test_mode: str = "whole",
        test_scale: int | None = 512,
        test_crop: int = 512,
        test_stride: int = 341,
        test_ratios: tuple[float, ...] = (1.0,),
        test_flip: bool = False,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"test_mode must be 'whole' or 'slide', got {test_mode!r}")
        network = build_network(arch, {"num_classes": num_classes, "in_chans": in_chans}, arch_args)
        if not hasattr(network, "forward_with_features"):
            raise ValueError(
                f"{arch} is not a segmentation architecture (no forward_with_features)"
            )
        self.model = cast(SegmentationModel, network)
        self.aux_head: FCNHead | None = None
        if aux_channels is not None:
            stride16 = self.model.feature_channels[-2]
            self.aux_head = FCNHead(stride16, aux_channels, num_classes, dropout=0.1)
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)

    @property
    def hp(self) -> SemanticSegmenterHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(SemanticSegmenterHparams, self.hparams)

    # --- steps ------------------------------------------------------------------------------------
    def load_start_files(self) -> None:
        """``init_backbone`` into the encoder, when a run starts without a checkpoint."""
        if self.hp.init_backbone is not None:
            self.model.load_backbone(self.hp.init_backbone)

    def forward(self, images: Tensor) -> Tensor:
        """Class probabilities at the input size (the evaluation protocol of ``test_*``)."""
        h = self.hp
        return segment(
            self.model, images, mode=h.test_mode, scale=h.test_scale, ratios=h.test_ratios,
            flip=h.test_flip, crop=h.test_crop, stride=h.test_stride,
        )  # fmt: skip

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        logits, features = self.model.forward_with_features(images)
        loss = segmentation_loss(logits, labels)
        if self.aux_head is not None:
            aux = F.interpolate(
                self.aux_head(features[-2]), size=labels.shape[-2:], mode="bilinear",
                align_corners=False,
            )  # fmt: skip
            loss = loss + self.hp.aux_weight * segmentation_loss(aux, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; lower the "
                "learning rate or check the inputs for NaN/inf"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def _evaluate(self, batch: dict[str, Any]) -> None:
        for image, label in zip(batch["image"], batch["label"], strict=True):
            self.confusion.update(self(image[None]).argmax(1), label[None])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch)

    def _log_metrics(self, prefix: str) -> dict[str, Tensor]:
        metrics = confusion_metrics(self.confusion.compute())
        self.confusion.reset()
        for name in ("mIoU", "mAcc", "aAcc"):
            self.log(f"{prefix}/{name}", metrics[name].float(), prog_bar=name == "mIoU")
        return metrics

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        metrics = self._log_metrics("test")
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if log_dir is None or not self.trainer.is_global_zero:
            return
        names = self.hp.classes or [str(i) for i in range(self.hp.num_classes)]
        with open(Path(log_dir) / "per_class.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "IoU", "Acc"])
            for name, iou, acc in zip(names, metrics["IoU"], metrics["Acc"], strict=True):
                writer.writerow([name, f"{iou.item():.4f}", f"{acc.item():.4f}"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images = batch["input"] if "input" in batch else batch["image"]
        return {"label": [self(image[None]).argmax(1)[0].byte() for image in images]}

    # --- optimisation -----------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: weight decay off for 1-D parameters; backbone lr by layer-wise decay,
        everything else × ``head_lr_mult``."""
        h = self.hp
        backbone = self.model.backbone
        owned = {id(p): n for n, p in backbone.named_parameters()}
        ids = layer_ids(backbone, h.num_layers)
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for param in self.parameters():
            if not param.requires_grad:
                continue
            name = owned.get(id(param))
            scale = (
                h.layer_decay ** (h.num_layers - ids[name]) if name is not None else h.head_lr_mult
            )
            decay = 0.0 if param.ndim <= 1 else h.weight_decay
            groups.setdefault((scale, decay), []).append(param)
        return [
            {"params": ps, "lr": h.lr * scale, "weight_decay": decay}
            for (scale, decay), ps in groups.items()
        ]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
        optimizer = torch.optim.AdamW(self.param_groups(), lr=h.lr, betas=h.betas)
        total = max(int(self.trainer.estimated_stepping_batches), 1)

        def factor(step: int) -> float:
            poly = (1 - min(step, total) / total) ** h.poly_power
            if step < h.warmup_steps:
                return poly * (h.warmup_ratio + (1 - h.warmup_ratio) * step / h.warmup_steps)
            return poly

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
