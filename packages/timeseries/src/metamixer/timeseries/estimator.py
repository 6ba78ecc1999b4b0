"""FFNet as a gluonts estimator: probabilistic forecasts for gluonts datasets.

``FFNetEstimator(prediction_length=24, context_length=96, run_dir="runs/gluonts").train(dataset)``
returns a ``PyTorchPredictor`` whose forecasts are sample paths of a distribution (Student-t by
default); it works with ``make_evaluation_predictions``, ``Evaluator`` and ``serialize`` /
``Predictor.deserialize``.  Series are univariate, scaled by gluonts' scaler, fed to the FFNet
backbone and projected to the distribution's arguments per forecast step.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from typing import Any, cast

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic, select
from gluonts.model import Input, InputSpec
from gluonts.torch.distributions import Output, StudentTOutput
from gluonts.torch.model.estimator import PyTorchLightningEstimator
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.torch.scaler import MeanScaler, NOPScaler, StdScaler
from gluonts.torch.util import weighted_average
from gluonts.transform import (
    AddObservedValuesIndicator,
    ExpectedNumInstanceSampler,
    InstanceSplitter,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
)
from torch import Tensor, nn

from metamixer.core import build_network, deploy

from . import models as _models  # noqa: F401  (registers the forecaster architectures)
from .models import FFNetForecaster

PREDICTION_INPUTS = ["past_target", "past_observed_values"]
TRAINING_INPUTS = [*PREDICTION_INPUTS, "future_target", "future_observed_values"]
STUDENT_T = StudentTOutput()
SCALERS = {"std": StdScaler, "mean": MeanScaler, "none": NOPScaler}
#: The estimator's backbone settings for the default ``arch`` (under the user's ``arch_args``),
#: chosen with the look-back below on validation windows (``benchmarks/gluonts_peers.py
#: --validate``; the README's probabilistic peer table says how).
DEFAULT_ARCH_ARGS = {"ffnet_ts": {"dim": 32, "patch_size": 8, "patch_stride": 4}}
#: Default look-back in forecast horizons (gluonts' PatchTST default too).
CONTEXT_HORIZONS = 10


class FFNetDistributionModel(nn.Module):
    """FFNet backbone + per-step projection to the arguments of ``distr_output``."""

    def __init__(
        self,
        prediction_length: int,
        context_length: int,
        distr_output: Output,
        scaling: str = "std",
        head_dim: int = 32,
        arch: str = "ffnet_ts",
        arch_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if scaling not in SCALERS:
            raise ValueError(f"scaling must be one of {sorted(SCALERS)}, got {scaling!r}")
        self.prediction_length, self.context_length = prediction_length, context_length
        self.distr_output = distr_output
        self.scaler = SCALERS[scaling](keepdim=True)
        task = {"num_vars": 1, "seq_len": context_length, "horizon": prediction_length}
        # every registered forecaster architecture is an FFNetForecaster (its features feed the head)
        self.backbone = cast(
            FFNetForecaster, build_network(arch, task, {"revin": False, **(arch_args or {})})
        )
        deploy(self.backbone, "cpu_training")
        self.head_dim = head_dim
        features = self.backbone.dim * self.backbone.num_patches
        self.head = nn.Linear(features, prediction_length * head_dim)
        self.args_proj = distr_output.get_args_proj(head_dim)

    def describe_inputs(self, batch_size: int = 1) -> InputSpec:
        shape = (batch_size, self.context_length)
        return InputSpec(
            {name: Input(shape=shape, dtype=torch.float) for name in PREDICTION_INPUTS},
            torch.zeros,
        )

    def forward(
        self, past_target: Tensor, past_observed_values: Tensor
    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        scaled, loc, scale = self.scaler(past_target, past_observed_values)
        # unobserved steps (gluonts pads a short history with zeros, and writes zeros for NaNs)
        # would reach the network as spikes of -loc/scale: they get the observed steps' mean
        weights = past_observed_values
        fill = (scaled * weights).sum(-1, keepdim=True) / weights.sum(-1, keepdim=True).clamp(min=1)
        scaled = torch.where(weights > 0, scaled, fill)
        features = self.backbone.forward_features(scaled.unsqueeze(-1))  # (B, D, N)
        hidden = self.head(features.flatten(1)).view(-1, self.prediction_length, self.head_dim)
        return self.args_proj(hidden), loc, scale

    def loss(
        self,
        past_target: Tensor,
        past_observed_values: Tensor,
        future_target: Tensor,
        future_observed_values: Tensor,
    ) -> Tensor:
        distr_args, loc, scale = self(past_target, past_observed_values)
        loss = self.distr_output.loss(
            target=future_target, distr_args=distr_args, loc=loc, scale=scale
        )
        return weighted_average(loss, weights=future_observed_values, dim=-1)


class FFNetGluonModule(pl.LightningModule):
    """Thin LightningModule around ``FFNetDistributionModel`` (negative log-likelihood, Adam)."""

    @validated()
    def __init__(self, model_kwargs: dict, lr: float = 1e-3, weight_decay: float = 1e-8) -> None:
        super().__init__()
        self.model = FFNetDistributionModel(**model_kwargs)
        self.lr, self.weight_decay = lr, weight_decay
        self.inputs = self.model.describe_inputs()

    def forward(self, *args: Tensor, **kwargs: Tensor) -> tuple:
        return self.model(*args, **kwargs)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.loss(
            **select(self.inputs, batch),
            future_target=batch["future_target"],
            future_observed_values=batch["future_observed_values"],
        ).mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class FFNetEstimator(PyTorchLightningEstimator):
    """gluonts estimator for FFNet (univariate series, probabilistic output).

    Args:
        prediction_length: forecast horizon.
        context_length: look-back window (default ``10 * prediction_length``, at least 16).
        arch: the backbone's architecture name (``metamixer.core.ARCHITECTURES``, e.g.
            ``ffnet_ts``); scaling replaces its RevIN.
        arch_args: overrides of its arguments (e.g. ``dim``, ``token_kernels``), checked by name;
            for ``ffnet_ts`` they apply over ``DEFAULT_ARCH_ARGS`` (width 32, patch 8, stride 4).
        head_dim: width of the per-step projection before the distribution arguments.
        distr_output: forecast distribution (default Student-t).
        scaling: "std", "mean" or "none".
        lr, weight_decay: Adam settings.
        batch_size, num_batches_per_epoch: training batches.
        run_dir: folder for Lightning's checkpoints and logs (default: a new temporary folder,
            never the working directory).
        trainer_kwargs: further ``lightning.Trainer`` arguments (default 100 epochs, clip 10).
    """

    @validated()
    def __init__(
        self,
        prediction_length: int,
        context_length: int | None = None,
        arch: str = "ffnet_ts",
        arch_args: dict[str, Any] | None = None,
        head_dim: int = 32,
        distr_output: Output = STUDENT_T,
        scaling: str = "std",
        lr: float = 1e-3,
        weight_decay: float = 1e-8,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        run_dir: str | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        run_dir = run_dir or tempfile.mkdtemp(prefix="ffnet-gluonts-")
        kwargs = {"max_epochs": 100, "gradient_clip_val": 10.0, "default_root_dir": run_dir}
        kwargs.update(trainer_kwargs or {})
        super().__init__(trainer_kwargs=kwargs)
        self.run_dir = run_dir
        self.prediction_length = prediction_length
        self.context_length = context_length or max(16, CONTEXT_HORIZONS * prediction_length)
        self.arch = arch
        self.arch_args = {**DEFAULT_ARCH_ARGS.get(arch, {}), **(arch_args or {})}
        self.head_dim, self.distr_output, self.scaling = head_dim, distr_output, scaling
        self.lr, self.weight_decay = lr, weight_decay
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch

    def create_transformation(self) -> Transformation:
        return SelectFields(
            [FieldName.ITEM_ID, FieldName.INFO, FieldName.START, FieldName.TARGET],
            allow_missing=True,
        ) + AddObservedValuesIndicator(
            target_field=FieldName.TARGET, output_field=FieldName.OBSERVED_VALUES
        )

    def create_lightning_module(self) -> pl.LightningModule:
        return FFNetGluonModule(
            model_kwargs={
                "prediction_length": self.prediction_length,
                "context_length": self.context_length,
                "distr_output": self.distr_output,
                "scaling": self.scaling,
                "head_dim": self.head_dim,
                "arch": self.arch,
                "arch_args": self.arch_args,
            },
            lr=self.lr,
            weight_decay=self.weight_decay,
        )

    def _splitter(self, mode: str) -> InstanceSplitter:
        sampler = {
            "training": ExpectedNumInstanceSampler(
                num_instances=1.0, min_future=self.prediction_length
            ),
            "validation": ValidationSplitSampler(min_future=self.prediction_length),
            "test": TestSplitSampler(),
        }[mode]
        return InstanceSplitter(
            target_field=FieldName.TARGET,
            is_pad_field=FieldName.IS_PAD,
            start_field=FieldName.START,
            forecast_start_field=FieldName.FORECAST_START,
            instance_sampler=sampler,
            past_length=self.context_length,
            future_length=self.prediction_length,
            time_series_fields=[FieldName.OBSERVED_VALUES],
            dummy_value=self.distr_output.value_in_support,
        )

    def create_training_data_loader(
        self,
        data: Dataset,
        module: pl.LightningModule,
        shuffle_buffer_length: int | None = None,
        **kwargs: Any,
    ) -> Iterable:
        instances = self._splitter("training").apply(Cyclic(data).stream(), is_train=True)
        return as_stacked_batches(
            instances,
            batch_size=self.batch_size,
            shuffle_buffer_length=shuffle_buffer_length,
            field_names=TRAINING_INPUTS,
            output_type=torch.tensor,
            num_batches_per_epoch=self.num_batches_per_epoch,
        )

    def create_validation_data_loader(
        self, data: Dataset, module: pl.LightningModule, **kwargs: Any
    ) -> Iterable:
        instances = self._splitter("validation").apply(data, is_train=True)
        return as_stacked_batches(
            instances,
            batch_size=self.batch_size,
            field_names=TRAINING_INPUTS,
            output_type=torch.tensor,
        )

    def create_predictor(
        self, transformation: Transformation, module: pl.LightningModule
    ) -> PyTorchPredictor:
        return PyTorchPredictor(
            input_transform=transformation + self._splitter("test"),
            input_names=PREDICTION_INPUTS,
            prediction_net=module,
            forecast_generator=self.distr_output.forecast_generator,
            batch_size=self.batch_size,
            prediction_length=self.prediction_length,
            device="auto",
        )
