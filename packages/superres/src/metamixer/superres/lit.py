"""LightningModule for super-resolution with the authors' recipe (L1 + 0.02·FFT loss, Adam, cosine)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from metamixer.core import build_network
from metamixer.lab.knobs import architecture_knobs

from . import models as _models  # noqa: F401  (registers the FFNet-SR architectures)
from .inference import psnr_ssim_y, upscale

#: ``arch_args`` (``fit --model.arch_args.help FFNetSRArgs`` lists them with their types)
FFNetSRArgs = architecture_knobs("ffnet_sr_light")


class EvalBatch(TypedDict):
    """A validation / test batch of ``PairedImages``."""

    lr: Tensor
    hr: Tensor
    name: list[str]


def fft_l1_loss(sr: Tensor, hr: Tensor) -> Tensor:
    """L1 distance between the 2D FFTs (real and imaginary parts) of output and target."""
    a, b = torch.fft.fft2(sr.float()), torch.fft.fft2(hr.float())
    return F.l1_loss(torch.view_as_real(a), torch.view_as_real(b))


class SuperResolutionHparams(Protocol):
    """``SuperResolution.hparams``: its constructor's arguments."""

    arch: str
    scale: int
    arch_args: Mapping[str, Any] | None  # a FFNetSRArgs
    lr: float
    min_lr: float
    betas: tuple[float, float]
    fft_weight: float
    ema_decay: float | None
    tile: int | None
    save_images: bool
    channels_last: bool
    val_names: list[str] | None
    test_names: list[str] | None


class SuperResolution(L.LightningModule):
    """Train / evaluate FFNet-SR.

    Args:
        arch: architecture name (``ffnet_sr_light``, ``ffnet_sr``, ``ffnet_sr_light_hybrid``,
            ``ffnet_sr_test``; see ``metamixer.core.ARCHITECTURES``).
        scale: upscaling factor (linked from the data module by the CLI).
        arch_args: overrides of the architecture's arguments (e.g. ``dim``, ``depth``,
            ``token_mixers``), checked by name.
        lr: Adam learning rate (cosine-annealed to ``min_lr`` over the run).
        min_lr: final learning rate.
        betas: Adam betas.
        fft_weight: weight of the FFT L1 loss.
        ema_decay: evaluate an exponential moving average of the weights (``None`` = off).
        tile: LR tile size for validation / test inference (``None`` = whole images).
        save_images: write SR images and LR-bicubic / ours / HR crops of the test sets as PNG.
        channels_last: channels-last memory format.
        val_names: the validation sets' names, one per loader (linked from the data).
        test_names: the test sets' names, one per loader (linked from the data).
    """

    def __init__(
        self,
        arch: str = "ffnet_sr_light",
        scale: int = 2,
        # a TypedDict built at run time (jsonargparse reads it for the CLI), not a static type
        arch_args: FFNetSRArgs | None = None,  # type: ignore[valid-type]
        lr: float = 1e-3,
        min_lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.99),
        fft_weight: float = 0.02,
        ema_decay: float | None = None,
        tile: int | None = None,
        save_images: bool = False,
        channels_last: bool = True,
        val_names: list[str] | None = None,
        test_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_network(arch, {"scale": scale}, arch_args)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if ema_decay is not None:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self._scores: dict[str, list[tuple[float, float, float, float]]] = {}

    @property
    def hp(self) -> SuperResolutionHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(SuperResolutionHparams, self.hparams)

    def forward(self, lr: Tensor) -> Tensor:
        if self.hp.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return self.model(lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        sr = self(batch["lr"])
        l1 = F.l1_loss(sr, batch["hr"])
        loss = l1 + self.hp.fft_weight * fft_l1_loss(sr, batch["hr"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}; lower the lr")
        self.log_dict({"train/loss": loss, "train/l1": l1}, prog_bar=True, batch_size=len(sr))
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The step, then the EMA update (here rather than in ``on_train_batch_end``, which runs
        after callbacks: a step checkpoint would miss the step's EMA update)."""
        super().optimizer_step(*args, **kwargs)
        d = self.hp.ema_decay
        if self.ema is None or d is None:  # both set together, by ``ema_decay``
            return
        with torch.no_grad():
            pairs = zip(
                self.ema.state_dict().values(), self.model.state_dict().values(), strict=True
            )
            for ema, live in pairs:
                if ema.is_floating_point():
                    ema.lerp_(live, 1 - d)
                else:
                    ema.copy_(live)

    def _evaluate(self, batch: EvalBatch, split: str, names: list[str], idx: int) -> None:
        net = self.ema if self.ema is not None else self.model
        lr, hr = batch["lr"], batch["hr"]
        if self.hp.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        s = self.hp.scale
        sr = upscale(net, lr, s, tile=self.hp.tile).clamp(0, 1)
        bicubic = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)
        name = names[idx] if idx < len(names) else f"set{idx}"
        for i in range(len(sr)):
            psnr, ssim = psnr_ssim_y(sr[i], hr[i], s)
            base_psnr, base_ssim = psnr_ssim_y(bicubic[i], hr[i], s)
            self._scores.setdefault(f"{split}/{name}", []).append(
                (psnr, ssim, base_psnr, base_ssim)
            )
            if split == "test" and self.hp.save_images and self.trainer.log_dir:
                from .plots import save_comparison

                out = Path(self.trainer.log_dir) / "images" / name
                save_comparison(out, batch["name"][i], bicubic[i], sr[i], hr[i])

    def validation_step(self, batch: EvalBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        names = self.hp.val_names or []
        self._evaluate(batch, "val", names, dataloader_idx)

    def test_step(self, batch: EvalBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        names = self.hp.test_names or []
        self._evaluate(batch, "test", names, dataloader_idx)

    def _log_scores(self) -> None:
        for key, rows in self._scores.items():
            t = torch.tensor(rows, dtype=torch.float64).mean(0)
            metrics = {f"{key}/psnr": t[0], f"{key}/ssim": t[1], f"{key}/bicubic_psnr": t[2],
                       f"{key}/bicubic_ssim": t[3]}  # fmt: skip
            self.log_dict({k: v.float() for k, v in metrics.items()}, prog_bar=key.endswith("psnr"))
        self._scores.clear()

    def on_validation_epoch_end(self) -> None:
        self._log_scores()

    def on_test_epoch_end(self) -> None:
        self._log_scores()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        lr = batch["input"] if "input" in batch else batch["lr"]  # own files / a test set
        if lr.numel() == 0:  # an unreadable file
            return None
        if self.hp.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return upscale(self.model, lr, self.hp.scale, tile=self.hp.tile).clamp(0, 1)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
        optimizer = torch.optim.Adam(self.model.parameters(), lr=h.lr, betas=h.betas, foreach=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        ratio = h.min_lr / h.lr

        def cosine(step: int) -> float:
            return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
