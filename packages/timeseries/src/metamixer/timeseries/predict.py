"""Forecast past the end of your own CSV with a trained model: a forecast CSV and a plot.

    python -m metamixer.timeseries.predict RUN/checkpoints/last.ckpt my_series.csv
    python -m metamixer.timeseries.predict PREDICTOR_FOLDER my_series.csv [--quantiles 0.1 0.5 0.9]

The CSV has the training data's layout (``date`` + the variables); its last rows are the history.
A Lightning checkpoint (``Forecaster``) gives point forecasts of the variables it was trained on.
A folder written by the gluonts predictor (``FFNetEstimator(...).train(data).serialize(folder)``)
gives probabilistic forecasts: every variable of the CSV is forecast as its own series, with its
mean and one column per quantile (``Demand, Demand_q0.1, Demand_q0.5, Demand_q0.9``).  Both write
``forecast.csv`` and ``forecast.png`` into a new ``predict-<time>`` run folder.  (``predict`` with
any config writes through ``ForecastWriter``: without ``data.predict_path`` every test window's
forecast goes to ``forecasts.csv``.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metamixer.lab import runs
from metamixer.lab.main import predict_files, run_alias
from metamixer.lab.tasks import get_task

from .data import future_dates, read_series_csv

#: modules whose classes a gluonts predictor folder may name (its JSON builds them by name)
PREDICTOR_MODULES = ("gluonts.", "metamixer.", "numpy.")


def _named_classes(node: Any) -> list[str]:
    """Every class or function that a gluonts ``predictor.json`` asks to build."""
    if isinstance(node, list):
        return [name for item in node for name in _named_classes(item)]
    if not isinstance(node, dict):
        return []
    own = [node[k] for k in ("class", "function") if "__kind__" in node and k in node]
    return own + [name for value in node.values() for name in _named_classes(value)]


def load_gluonts_predictor(folder: Path) -> Any:
    """A serialized gluonts ``PyTorchPredictor``, after checking that its description names only
    gluonts / metamixer classes (its weights are read weights-only by gluonts)."""
    description = folder / "predictor.json"
    if not description.is_file():
        raise FileNotFoundError(
            f"{folder} is not a gluonts predictor folder (no predictor.json); save one with "
            "FFNetEstimator(...).train(data).serialize(folder), or give a .ckpt file"
        )
    try:
        names = _named_classes(json.loads(description.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{description} is not readable JSON: {err}") from err
    foreign = sorted({n for n in names if not str(n).startswith(PREDICTOR_MODULES)})
    if foreign:
        raise ValueError(
            f"{description} asks to build {', '.join(foreign)}; only gluonts and metamixer "
            "predictors are loaded"
        )
    from gluonts.model.predictor import Predictor

    return Predictor.deserialize(folder, device="cpu")


def gluonts_forecast(
    folder: Path, series: Path, *, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    num_samples: int = 200, target: str | None = None, root: str | Path = "runs",
) -> Path:  # fmt: skip
    """Forecast every variable of ``series`` (or only ``target``) with the gluonts predictor in
    ``folder``; writes ``forecast.csv`` (date, then per variable its mean and ``_q<q>`` columns) and
    ``forecast.png`` into ``<root>/timeseries/<folder name>/predict-<time>/predictions``."""
    bad = [q for q in quantiles if not 0 < q < 1]
    if bad or not quantiles:
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {list(quantiles)}")
    dates, values, names = read_series_csv(
        series, "S" if target else "M", target or "__no_target__"
    )
    predictor = load_gluonts_predictor(folder)
    context = int(predictor.prediction_net.model.context_length)
    if len(values) < context:
        raise ValueError(f"{series} has {len(values)} rows; the model reads the last {context}")
    import pandas as pd
    from gluonts.dataset.common import ListDataset

    step = pd.Series(dates[-50:]).diff().mode()[0]
    freq = pd.tseries.frequencies.to_offset(step).freqstr
    start = pd.Period(dates[0], freq=freq)
    data = ListDataset(
        [{"start": start, "target": values[:, j], "item_id": name} for j, name in enumerate(names)],
        freq=freq,
    )
    forecasts = list(predictor.predict(data, num_samples=num_samples))
    horizon = predictor.prediction_length
    columns = {}
    for name, forecast in zip(names, forecasts, strict=True):
        columns[name] = [float(v) for v in forecast.mean]
        for q in quantiles:
            columns[f"{name}_q{q:g}"] = [float(v) for v in forecast.quantile(q)]

    run = runs.new_run_dir(Path(root) / "timeseries" / folder.resolve().name, "predict")
    out = run / "predictions"
    out.mkdir()
    with open(out / "forecast.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", *columns])
        for i, date in enumerate(future_dates(dates, horizon)):
            writer.writerow([date.isoformat(), *(f"{c[i]:.6g}" for c in columns.values())])
    from .plots import plot_forecast

    mean = torch.tensor([columns[name] for name in names]).T
    plot_forecast(torch.from_numpy(values[-context:]), mean, names, out / "forecast.png")
    print(f"predictions written to {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    """A gluonts predictor folder goes to ``gluonts_forecast``, a checkpoint to the Lightning
    ``predict`` of its run."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not Path(argv[0]).is_dir():
        predict_files(get_task("timeseries"), argv)
        return
    parser = argparse.ArgumentParser(
        prog="metamixer timeseries predict-files",
        description="Forecast a CSV with a gluonts predictor folder: mean and quantiles.",
    )
    parser.add_argument("predictor", help="folder written by the gluonts predictor's serialize")
    parser.add_argument("input", help="a CSV: a date column and the variables")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--num_samples", type=int, default=200, help="sample paths per series")
    parser.add_argument("--target", default=None, help="forecast this column only")
    parser.add_argument("--default_root_dir", default="runs", help="root of the run folders")
    args = parser.parse_args(argv)
    gluonts_forecast(
        Path(args.predictor), Path(args.input), quantiles=args.quantiles,
        num_samples=args.num_samples, target=args.target, root=args.default_root_dir,
    )  # fmt: skip


if __name__ == "__main__":
    run_alias("timeseries", "predict-files")
