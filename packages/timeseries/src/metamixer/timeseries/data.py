"""Long-term forecasting data in the Informer / TSLib layout.

A CSV with a ``date`` column followed by the variables.  Splits follow the reference loaders:

* ``ETTh1`` / ``ETTh2`` (hourly): 12 / 4 / 4 months; ``ETTm1`` / ``ETTm2`` (15-min): the same months;
* ``custom`` (weather, electricity, traffic, exchange_rate, …): 70 % / 10 % / 20 % of the rows.

Validation and test windows start ``seq_len`` rows before their split border, so that the first
forecast starts exactly at the border.  A ``StandardScaler`` is fitted on the training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from metamixer.lab.loaders import EpochShuffle, LoadersBySplit, ResumableLoader

HOURS_PER_MONTH = 30 * 24
ETT_STEPS_PER_HOUR = {"ETTh1": 1, "ETTh2": 1, "ETTm1": 4, "ETTm2": 4}
SPLITS = ("train", "val", "test")


def split_borders(dataset: str, num_rows: int, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of each split, the val / test ones including the look-back."""
    if dataset in ETT_STEPS_PER_HOUR:
        month = HOURS_PER_MONTH * ETT_STEPS_PER_HOUR[dataset]
        ends = (12 * month, 16 * month, 20 * month)
        if num_rows < ends[-1]:
            raise ValueError(
                f"{dataset} needs at least {ends[-1]} rows (20 months), the file has {num_rows}"
            )
    elif dataset == "custom":
        num_train, num_test = int(num_rows * 0.7), int(num_rows * 0.2)
        ends = (num_train, num_rows - num_test, num_rows)
    else:
        valid = ", ".join([*ETT_STEPS_PER_HOUR, "custom"])
        raise ValueError(f"unknown dataset {dataset!r}; valid: {valid}")
    starts = (0, ends[0] - seq_len, ends[1] - seq_len)
    return dict(zip(SPLITS, zip(starts, ends, strict=True), strict=True))


@dataclass
class StandardScaler:
    """Per-variable standardisation fitted on the training rows."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> StandardScaler:
        std = values.std(0)
        return cls(values.mean(0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: Tensor) -> Tensor:
        """Undo the scaling of a ``(..., M)`` tensor."""
        mean = torch.as_tensor(self.mean, dtype=values.dtype, device=values.device)
        std = torch.as_tensor(self.std, dtype=values.dtype, device=values.device)
        return values * std + mean


def read_series_csv(
    path: Path, features: str, target: str
) -> tuple[pd.DatetimeIndex, np.ndarray, list[str]]:
    """Read a TSLib CSV; returns dates, a float array ``(T, M)`` and the variable names.

    ``features``: "M" all variables, "S" the target only, "MS" all variables with the target last.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no CSV at {path}; give the folder holding it as data.root")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path} is not a readable CSV: {err}") from err
    if "date" not in frame.columns:
        raise ValueError(
            f"{path} has no 'date' column (columns: {list(frame.columns)[:8]}); TSLib CSVs start "
            "with a 'date' column followed by the variables"
        )
    variables = [c for c in frame.columns if c != "date"]
    if features not in ("M", "S", "MS"):
        raise ValueError(f"features must be 'M', 'S' or 'MS', got {features!r}")
    if features in ("S", "MS") and target not in variables:
        raise ValueError(f"target column {target!r} not in {path} (variables: {variables[:8]})")
    if features == "S":
        variables = [target]
    elif target in variables:  # TSLib puts the target last
        variables = [c for c in variables if c != target] + [target]
    values = frame[variables].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: column {variables[col]!r} row {row + 2} (line in the file) is missing or "
            f"not numeric ({frame[variables[col]].iloc[row]!r}); {int(bad.sum())} such cells"
        )
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: the 'date' column does not parse as dates: {err}") from err
    return dates, values.to_numpy(np.float32), variables


class ForecastWindows(Dataset):
    """Sliding windows (stride 1) of a ``(T, M)`` array: ``(history (L, M), future (H, M))``."""

    def __init__(self, values: np.ndarray, seq_len: int, pred_len: int) -> None:
        if len(values) < seq_len + pred_len:
            raise ValueError(
                f"a split of {len(values)} steps is shorter than seq_len + pred_len "
                f"({seq_len} + {pred_len}); use a shorter window or a longer series"
            )
        self.values = torch.from_numpy(np.ascontiguousarray(values))
        self.seq_len, self.pred_len = seq_len, pred_len

    def __len__(self) -> int:
        return len(self.values) - self.seq_len - self.pred_len + 1

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        mid = i + self.seq_len
        return self.values[i:mid], self.values[mid : mid + self.pred_len]


def future_dates(dates: pd.DatetimeIndex, steps: int) -> pd.DatetimeIndex:
    """The ``steps`` timestamps after the last date, at the series' most common spacing."""
    step = pd.Series(dates[-50:]).diff().mode()[0]
    return pd.DatetimeIndex([dates[-1] + step * (k + 1) for k in range(steps)])


class TSLibHparams(Protocol):
    """``TSLibDataModule.hparams``: its constructor's arguments."""

    root: str
    data_path: str
    dataset: str
    features: str
    target: str
    seq_len: int
    pred_len: int
    batch_size: int
    num_workers: int
    scale: bool
    shuffle: bool
    predict_path: str | None


class TSLibDataModule(LoadersBySplit, L.LightningDataModule):
    """A TSLib long-term forecasting dataset.

    Args:
        root: folder with the CSV.
        data_path: CSV file name, e.g. ``ETTh1.csv``, ``weather.csv``.
        dataset: split rule: ``ETTh1``, ``ETTh2``, ``ETTm1``, ``ETTm2`` or ``custom`` (70/10/20).
        features: ``M`` (all variables), ``S`` (target only) or ``MS``.
        target: target column for ``S`` / ``MS``.
        seq_len: look-back window.
        pred_len: forecast horizon.
        batch_size: training batch size.
        num_workers: data-loading processes.
        scale: standardise with statistics of the training rows.
        shuffle: shuffle the training windows (off: consecutive windows, e.g. to compare a
            distributed run with a single-process one).
        predict_path: a CSV in the same layout (``date`` + the same variables) to forecast past
            its end with ``predict`` (default: every test window).
    """

    def __init__(
        self,
        root: str,
        data_path: str = "ETTh1.csv",
        dataset: str = "ETTh1",
        features: str = "M",
        target: str = "OT",
        seq_len: int = 96,
        pred_len: int = 96,
        batch_size: int = 32,
        num_workers: int = 0,
        scale: bool = True,
        shuffle: bool = True,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = Path(root) / data_path
        self.windows: dict[str, ForecastWindows] = {}
        self.scaler: StandardScaler | None = None
        self._columns: list[str] | None = None
        self.predict_dates: pd.DatetimeIndex | None = None  # set by the predict_path loader

    @property
    def hp(self) -> TSLibHparams:
        """``self.hparams`` (the same object, which the batch-size finder may change), typed."""
        return cast(TSLibHparams, self.hparams)

    @property
    def fitted_scaler(self) -> StandardScaler:
        if self.scaler is None:
            raise RuntimeError(
                "the scaler is fitted on the training rows by setup(); call it first"
            )
        return self.scaler

    @property
    def variables(self) -> list[str]:
        """Variable names (reads the CSV header only)."""
        if self._columns is None:
            if not self.path.is_file():
                raise FileNotFoundError(f"no CSV at {self.path}; give its folder as data.root")
            header = list(pd.read_csv(self.path, nrows=0).columns)
            h = self.hp
            if "date" not in header:
                raise ValueError(f"{self.path} has no 'date' column (header: {header[:8]})")
            if h.target not in header:
                raise ValueError(
                    f"target column {h.target!r} is not in {self.path} (columns: {header[:8]}); "
                    "set data.target to one of them"
                )
            cols = [c for c in header if c != "date" and c != h.target]
            self._columns = (
                [h.target] if h.features == "S" else cols + [h.target] * (h.target in header)
            )
        return self._columns

    @property
    def num_vars(self) -> int:
        return len(self.variables)

    @property
    def seq_len(self) -> int:
        return self.hp.seq_len

    @property
    def pred_len(self) -> int:
        return self.hp.pred_len

    def setup(self, stage: str) -> None:
        if self.windows:
            return
        h = self.hp
        _, values, _ = read_series_csv(self.path, h.features, h.target)
        borders = split_borders(h.dataset, len(values), h.seq_len)
        train_start, train_end = borders["train"]
        self.scaler = StandardScaler.fit(values[train_start:train_end])
        if h.scale:
            values = self.scaler.transform(values)
        self.windows = {
            split: ForecastWindows(values[a:b], h.seq_len, h.pred_len)
            for split, (a, b) in borders.items()
        }

    def forecast_dates(self) -> pd.DatetimeIndex | None:
        """The dates a forecast of ``predict_path`` covers (known once its loader is built);
        ``None`` when predicting the test windows."""
        return self.predict_dates if self.hp.predict_path else None

    def inverse_transform(self, values: Tensor) -> Tensor:
        return self.fitted_scaler.inverse(values) if self.hp.scale else values

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        return (ResumableLoader if train else DataLoader)(
            self.windows[split],
            batch_size=self.hp.batch_size,
            sampler=EpochShuffle(len(self.windows[split]), self.hp.shuffle) if train else None,
            drop_last=False,
            num_workers=self.hp.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        h = self.hp
        if h.predict_path is None:
            return self._loader("test")
        dates, values, names = read_series_csv(Path(h.predict_path), h.features, h.target)
        if names != self.variables:
            raise ValueError(
                f"{h.predict_path} has the variables {names} but the model was trained on "
                f"{self.variables} (same names, same order)"
            )
        if len(values) < h.seq_len:
            raise ValueError(
                f"{h.predict_path} has {len(values)} rows; the model reads the last {h.seq_len}"
            )
        history = values[-h.seq_len :]
        if h.scale:
            history = self.fitted_scaler.transform(history)
        window = torch.from_numpy(np.ascontiguousarray(history))[None]
        self.predict_dates = future_dates(dates, h.pred_len)
        future = torch.zeros(1, h.pred_len, len(names))
        return DataLoader(TensorDataset(window, future), batch_size=1)
