"""LightningModule for long-term forecasting with the authors' recipe (Adam, MSE, lr held then ×0.9)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from metamixer.core import RECIPES, apply_passes, build_network
from metamixer.lab.knobs import architecture_knobs

from . import models as _models  # noqa: F401  (registers the forecaster architectures)

#: ``arch_args`` (``fit --model.arch_args.help FFNetForecasterArgs`` lists them with their types)
FFNetForecasterArgs = architecture_knobs("ffnet_ts")

LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss}


def held_then_decayed(epoch: int, *, hold: int, gamma: float) -> float:
    """LR multiplier: 1 for the first ``hold`` epochs, then ``gamma`` per epoch."""
    return 1.0 if epoch < hold else gamma ** (epoch - hold + 1)


class ForecasterHparams(Protocol):
    """``Forecaster.hparams``: its constructor's arguments."""

    arch: str
    num_vars: int
    seq_len: int
    horizon: int
    arch_args: Mapping[str, Any] | None  # a FFNetForecasterArgs
    training_passes: tuple[str, ...]
    loss: Literal["mse", "mae"]
    lr: float
    lr_hold_epochs: int
    lr_gamma: float
    patience: int
    plot_series: int


class Forecaster(L.LightningModule):
    """Train / evaluate ``FFNetForecaster`` on ``(history, future)`` windows.

    Args:
        arch: architecture name (``ffnet_ts``, ``ffnet_ts_hybrid``, ``ffnet_ts_test``; see
            ``metamixer.core.ARCHITECTURES``).
        num_vars: variables M (linked from the data module by the CLI).
        seq_len: look-back window (linked from the data module).
        horizon: forecast length (linked from the data module's ``pred_len``).
        arch_args: overrides of the architecture's arguments (e.g. ``dim``, ``mlp_ratio``,
            ``token_kernels``, ``token_mixers``, ``mlp_drop``), checked by name.
        training_passes: CPU training speed-ups applied to the network (``metamixer.core.deploy``:
            banded long-kernel depthwise conv, integer dropout masks);
            ``[]`` trains the network as defined.  Leaves the parameters and their names alone.
        loss: training objective, "mse" (the authors') or "mae" (robust to outlying days; the
            validation / test metrics are MSE and MAE either way, checkpoints selected on MSE).
        lr: Adam learning rate.
        lr_hold_epochs: epochs at the initial learning rate before decaying.
        lr_gamma: per-epoch decay factor afterwards.
        patience: early-stopping patience on the validation MSE (epochs; 0 = no early stopping).
        plot_series: test forecasts drawn into ``forecasts.png`` (0 = none).
    """

    def __init__(
        self,
        arch: str = "ffnet_ts",
        num_vars: int = 7,
        seq_len: int = 96,
        horizon: int = 96,
        # a TypedDict built at run time (jsonargparse reads it for the CLI), not a static type
        arch_args: FFNetForecasterArgs | None = None,  # type: ignore[valid-type]
        training_passes: tuple[str, ...] = RECIPES["cpu_training"],
        loss: Literal["mse", "mae"] = "mse",
        lr: float = 1e-4,
        lr_hold_epochs: int = 2,
        lr_gamma: float = 0.9,
        patience: int = 20,
        plot_series: int = 4,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.save_hyperparameters()
        task = {"num_vars": num_vars, "seq_len": seq_len, "horizon": horizon}
        self.model = build_network(arch, task, arch_args)
        apply_passes(self.model, training_passes)

        def metrics(prefix: str) -> MetricCollection:
            return MetricCollection(
                {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, prefix=prefix
            )

        self.val_metrics = metrics("val/")
        self.test_metrics = metrics("test/")
        self.test_metrics_original = metrics("test/original_")
        self._plot: tuple[Tensor, Tensor, Tensor] | None = None
        #: scaled values -> the data's units, for the ``test/original_*`` metrics; handed over by
        #: whoever holds the data (the CLI: the data module's ``inverse_transform``), else None
        self.inverse_transform: Callable[[Tensor], Tensor] | None = None

    @property
    def hp(self) -> ForecasterHparams:
        """``self.hparams`` (the same object, which the LR finder may change), typed."""
        return cast(ForecasterHparams, self.hparams)

    def forward(self, history: Tensor) -> Tensor:
        return self.model(history)

    def _check_batch(self, history: Tensor, future: Tensor) -> None:
        """Refuse windows the network was not built for, naming both (the CLI links the sizes
        from the data; a model built by hand may disagree)."""
        h = self.hp
        found = (history.shape[-1], history.shape[1], future.shape[1])
        if found != (h.num_vars, h.seq_len, h.horizon):
            raise ValueError(
                f"the data has {found[0]} variables, seq_len {found[1]}, pred_len {found[2]} but the "
                f"model was built with num_vars={h.num_vars}, seq_len={h.seq_len}, "
                f"horizon={h.horizon}; let the CLI link them or build the model to match"
            )
        if not torch.isfinite(history).all():
            raise ValueError("the input window holds NaN or inf values; clean the series first")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        history, future = batch
        self._check_batch(history, future)
        loss = LOSSES[self.hp.loss](self(history), future)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}; lower the lr")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(history))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        history, future = batch
        self._check_batch(history, future)
        prediction = self(history)
        self.val_metrics.update(prediction.flatten(), future.flatten())
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(history))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        history, future = batch
        self._check_batch(history, future)
        prediction = self(history)
        self.test_metrics.update(prediction.flatten(), future.flatten())
        self.log_dict(self.test_metrics, batch_size=len(history))
        inverse = self.inverse_transform
        if inverse is not None:
            self.test_metrics_original.update(
                inverse(prediction).flatten(), inverse(future).flatten()
            )
            self.log_dict(self.test_metrics_original, batch_size=len(history))
        if batch_idx == 0:
            self._plot = (history.cpu(), future.cpu(), prediction.cpu())

    def on_test_epoch_end(self) -> None:
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        if self._plot is None or log_dir is None or not self.trainer.is_global_zero:
            return
        if self.hp.plot_series > 0:
            from .plots import plot_forecasts

            plot_forecasts(*self._plot, Path(log_dir) / "forecasts.png", self.hp.plot_series)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self._check_batch(*batch)
        return self(batch[0])

    def configure_callbacks(self) -> list[L.Callback]:
        """Keep the best checkpoint by validation MSE (and the last); stop after ``patience``."""
        callbacks: list[L.Callback] = [
            ModelCheckpoint(monitor="val/mse", mode="min", save_last=True, filename="best-{epoch}"),
        ]
        if self.hp.patience > 0:
            callbacks.append(EarlyStopping("val/mse", patience=self.hp.patience, mode="min"))
        return callbacks

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hp
        optimizer = torch.optim.Adam(self.parameters(), lr=h.lr, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda epoch: held_then_decayed(epoch, hold=h.lr_hold_epochs, gamma=h.lr_gamma),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
