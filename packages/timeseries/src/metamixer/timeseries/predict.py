"""Forecast past the end of your own CSV with a trained checkpoint: a forecast CSV and a plot.

    python -m metamixer.timeseries.predict RUN/checkpoints/last.ckpt my_series.csv

The CSV has the training data's layout (``date`` + the same variables); the last ``seq_len`` rows
are the history.  (``predict`` with any config writes through ``ForecastWriter``: without
``data.predict_path`` every test window's forecast goes to ``forecasts.csv``.)
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch import Trainer

from metamixer.core.predict import PredictionFiles, predict_command
from metamixer.core.train import run_cli

from .__main__ import main as cli_main


class ForecastWriter(PredictionFiles):
    """``forecast.csv`` (future dates × variables, original scale) and ``forecast.png`` for a
    CSV given as ``data.predict_path``; ``forecasts.csv`` (window, step, variables) otherwise."""

    def write(self, trainer: Trainer, prediction: Any, batch: Any, indices: Any) -> None:
        dm = trainer.datamodule
        forecast = dm.inverse_transform(prediction.float().cpu())
        names = dm.variables
        dates = getattr(dm, "predict_dates", None) if dm.hparams.predict_path else None
        if dates is not None:
            with open(self.folder / "forecast.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["date", *names])
                for date, row in zip(dates, forecast[0].tolist(), strict=True):
                    writer.writerow([date.isoformat(), *(f"{v:.6g}" for v in row)])
            history = dm.inverse_transform(batch[0].float().cpu())[0]
            from .plots import plot_forecast

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


main = predict_command(cli_main, "timeseries")

if __name__ == "__main__":
    run_cli(main)
