"""LightningModule for image classification with the FFNet training recipe."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from metamixer.lab.knobs import architecture_knobs
from metamixer.vision import models as _models  # noqa: F401  (registers the FFNet variants with timm)
from metamixer.vision.backbone import (
    StartsFromFiles,
    build_classifier,
    cosine_with_warmup,
)
from metamixer.vision.models.ffnet_weights import convert_official_state_dict
from metamixer.vision.models.state_dicts import load_state_dict_strict, load_weights_file

#: ``arch_args`` of the FFNet classifiers (``fit --model.arch_args.help FFNetArgs`` lists them)
FFNetArgs = architecture_knobs("ffnet_1")


class ClassifierNetwork(Protocol):
    """What ``ImageClassifier`` uses of its network beyond ``nn.Module``: timm's classifier
    interface (FFNet, PoolFormer and every timm model have it)."""

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor: ...

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor: ...

    def get_classifier(self) -> nn.Module: ...


class ImageClassifierHparams(Protocol):
    """``ImageClassifier.hparams``: its constructor's arguments."""

    arch: str
    num_classes: int
    in_chans: int
    arch_args: Mapping[str, Any] | None  # a FFNetArgs
    init_weights: str | None
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_epochs: float
    min_lr: float
    label_smoothing: float
    mixup: float
    cutmix: float
    mixup_prob: float
    ema_decay: float | None
    teacher: str | None
    teacher_weights: str | None
    distillation_weight: float
    channels_last: bool
    classes: list[str] | None


class ImageClassifier(StartsFromFiles, L.LightningModule):
    """Train / evaluate a timm image classifier (FFNet by default).

    Args:
        arch: architecture name (``ffnet_1`` … ``ffnet_4``, ``ffnet_1_hybrid``, ``ffnet_test``, or
            any timm model).
        num_classes: classifier outputs (linked from the data module by the CLI).
        in_chans: input channels (linked from the data module by the CLI).
        arch_args: overrides of the FFNet architecture's knobs (``depths``, ``dims``,
            ``token_mixers``, ``token_kernels``, ``drop_path_rate``, …); an absent knob keeps the
            variant's value.  ``--model.arch_args.help FFNetArgs`` lists every knob with its type
            and choices (from Python, another timm model's keyword arguments pass through).
        init_weights: local weights to start from (authors' release, our export or a Lightning
            checkpoint, e.g. for fine-tuning at 384); the head is re-initialised if its size differs.
            Read to start training only: a module rebuilt from its own checkpoint does not read it.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to norms, biases and layer-scales).
        betas: AdamW betas.
        warmup_epochs: linear warmup length.
        min_lr: final learning rate of the cosine schedule.
        label_smoothing: label smoothing (also inside mixup / cutmix targets).
        mixup: mixup alpha (0 = off).
        cutmix: cutmix alpha (0 = off).
        mixup_prob: probability of applying mixup or cutmix to a batch.
        ema_decay: keep an exponential moving average of the weights (evaluated as ``val_ema/*``);
            ``None`` = off.
        teacher: timm model name of a hard-distillation teacher (``None`` = no distillation).
        teacher_weights: local weights of the teacher (required with ``teacher``).
        distillation_weight: share of the distillation loss (DeiT hard distillation: 0.5).
        channels_last: run the network in channels-last memory format.
        classes: the classes' names for per-class tables and figures (linked from the data).
    """

    def __init__(
        self,
        arch: str = "ffnet_1",
        num_classes: int = 1000,
        in_chans: int = 3,
        # a TypedDict built at run time (jsonargparse reads it for the CLI), not a static type
        arch_args: FFNetArgs | None = None,  # type: ignore[valid-type]
        init_weights: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        ema_decay: float | None = None,
        teacher: str | None = None,
        teacher_weights: str | None = None,
        distillation_weight: float = 0.5,
        channels_last: bool = False,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        task = {"num_classes": num_classes, "in_chans": in_chans}
        self.model = build_classifier(arch, task, arch_args)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                prob=mixup_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.teacher = None
        if teacher is not None:
            if teacher_weights is None:
                raise ValueError("distillation needs teacher_weights: a local file of the teacher")
            self.teacher = timm.create_model(teacher, num_classes=num_classes, in_chans=in_chans)
            self.teacher.requires_grad_(False).eval()
            self.head_dist = nn.Linear(self.network.num_features, num_classes)
        self.ema = ModelEmaV3(self.model, decay=ema_decay) if ema_decay is not None else None

        def metrics(prefix: str) -> MetricCollection:
            top: dict[str, Metric | MetricCollection] = {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")
            }
            if num_classes > 5:
                top["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
            return MetricCollection(top, prefix=prefix)

        self.val_metrics = metrics("val/")
        self.val_ema_metrics = metrics("val_ema/") if self.ema is not None else None
        self.test_metrics = metrics("test/")
        self.confusion = MulticlassConfusionMatrix(num_classes)

    @property
    def hp(self) -> ImageClassifierHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(ImageClassifierHparams, self.hparams)

    @property
    def network(self) -> ClassifierNetwork:
        """``self.model`` (the same module), typed as the timm classifier it is."""
        return cast(ClassifierNetwork, self.model)

    def load_start_files(self) -> None:
        """``init_weights`` into the network (and its EMA copy), ``teacher_weights`` into the
        teacher: read when a run starts without a checkpoint (``StartsFromFiles``)."""
        h = self.hp
        if h.init_weights is not None:
            self._load_initial_weights(h.init_weights)
            if self.ema is not None:
                self.ema.module.load_state_dict(self.model.state_dict())
        if self.teacher is not None:
            if h.teacher_weights is None:  # __init__ refuses it too
                raise ValueError("distillation needs teacher_weights: a local file of the teacher")
            self.teacher.load_state_dict(load_weights_file(h.teacher_weights))

    def _load_initial_weights(self, path: str) -> None:
        state = convert_official_state_dict(load_weights_file(path))
        head = self.network.get_classifier()
        own = self.model.state_dict()
        for name in ("weight", "bias"):
            key = f"head.{name}"
            if key in state and key in own and state[key].shape != own[key].shape:
                state[key] = getattr(head, name).detach().clone()  # new task: keep the fresh head
        load_state_dict_strict(self.model, state, path)

    # --- forward / steps --------------------------------------------------------------------------
    def _prepare(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.hp.in_chans:
            raise ValueError(
                f"expected image batches of shape (B, {self.hp.in_chans}, H, W), got "
                f"{tuple(images.shape)}: the data's channels and model.in_chans must agree"
            )
        if self.hp.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: Tensor) -> Tensor:
        images = self._prepare(images)
        if self.teacher is None:
            return self.model(images)
        net = self.network
        features = net.forward_head(net.forward_features(images), pre_logits=True)
        return (net.get_classifier()(features) + self.head_dist(features)) / 2

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, labels = self._prepare(batch["image"]), batch["label"]
        self.log(
            "train/skipped_images",
            batch["skipped"].float(),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            batch_size=1,
        )
        targets = labels
        if self.mixup is not None and images.shape[0] % 2 == 0:
            images, targets = self.mixup(images, labels)
        if self.teacher is None:
            loss = self._classification_loss(self.model(images), targets)
        else:
            net = self.network
            features = net.forward_head(net.forward_features(images), pre_logits=True)
            with torch.no_grad():
                teacher_labels = self.teacher(images).argmax(1)
            w = self.hp.distillation_weight
            loss = (1 - w) * self._classification_loss(
                net.get_classifier()(features), targets
            ) + w * F.cross_entropy(self.head_dist(features), teacher_labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; lower the "
                "learning rate or check the inputs for NaN/inf"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def _classification_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if targets.dim() == 2:  # soft targets from mixup / cutmix
            return SoftTargetCrossEntropy()(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.hp.label_smoothing)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The step, then the EMA update (here rather than in ``on_train_batch_end``, which runs
        after callbacks: a step checkpoint would miss the step's EMA update)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step + 1)  # the steps taken

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, labels = self._prepare(batch["image"]), batch["label"]
        logits = self(images)
        n = len(labels)
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True, batch_size=n)
        self.val_metrics.update(logits, labels)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=n)
        if self.ema is not None and self.val_ema_metrics is not None:  # both or neither
            self.val_ema_metrics.update(self.ema.module(images), labels)
            self.log_dict(self.val_ema_metrics, batch_size=n)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, labels = self._prepare(batch["image"]), batch["label"]
        logits = self(images)
        self.test_metrics.update(logits, labels)
        self.confusion.update(logits, labels)
        self.log_dict(self.test_metrics, batch_size=len(labels))

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()
        self.confusion.reset()
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if log_dir is None or not self.trainer.is_global_zero:
            return
        from metamixer.lab.plots import plot_confusion_matrix

        names = self.hp.classes
        plot_confusion_matrix(matrix, names, Path(log_dir) / "confusion_matrix.png")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images = batch["input"] if "input" in batch else batch["image"]  # own files / a split
        if images.numel() == 0:  # every file of this batch was unreadable
            return {"prob": torch.empty(0, self.hp.num_classes)}
        return {"prob": self(images).softmax(1)}

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
        params = param_groups_weight_decay(self, h.weight_decay)  # 1-D params: no decay
        optimizer = torch.optim.AdamW(params, lr=h.lr, betas=h.betas, foreach=True)
        total = self.trainer.estimated_stepping_batches
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(h.warmup_epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: cosine_with_warmup(
                step, warmup=warmup, total=int(total), min_ratio=h.min_lr / h.lr
            ),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
