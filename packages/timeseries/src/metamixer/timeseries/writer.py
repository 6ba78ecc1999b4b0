"""``predict``'s files for forecasting: a forecast CSV and plot of the user's series, or every
test window's forecast."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import Trainer
from torch import Tensor

from metamixer.lab.writers import PredictionFiles
from metamixer.timeseries.plots import plot_forecast


class ForecastWriter(PredictionFiles):
    """``forecast.csv`` (future dates × variables, original scale) and ``forecast.png`` for a
    CSV given as ``data.predict_path``; ``forecasts.csv`` (window, step, variables) otherwise.

    Args:
        variables: the series' variable names.
        inverse_transform: values in the model's scale -> the data's own.
        forecast_dates: the dates a forecast of ``predict_path`` covers (``None``: test windows).
    """

    def __init__(
        self, variables: Sequence[str], inverse_transform: Callable[[Tensor], Tensor],
        forecast_dates: Callable[[], Sequence[Any] | None],
    ) -> None:  # fmt: skip
        super().__init__()
        self.variables, self.inverse_transform = list(variables), inverse_transform
        self.forecast_dates = forecast_dates

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        forecast = self.inverse_transform(prediction.float().cpu())
        names = self.variables
        dates = self.forecast_dates()
        if dates is not None:
            with open(self.folder / "forecast.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["date", *names])
                for date, row in zip(dates, forecast[0].tolist(), strict=True):
                    writer.writerow([date.isoformat(), *(f"{v:.6g}" for v in row)])
            history = self.inverse_transform(batch[0].float().cpu())[0]

            plot_forecast(history, forecast[0], names, self.folder / "forecast.png")
            return
        path = self.folder / "forecasts.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["window", "step", *names])
            for window, values in zip(indices, forecast.tolist(), strict=True):
                for step, row in enumerate(values, 1):
                    writer.writerow([window, step, *(f"{v:.6g}" for v in row)])
