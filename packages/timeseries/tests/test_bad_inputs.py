"""Bad-input catalogue (time series): each case raises a specific exception naming the problem."""

import pandas as pd
import pytest
import torch

from metamixer.timeseries import FFNetForecaster
from metamixer.timeseries.data import TSLibDataModule, read_series_csv
from metamixer.timeseries.lit import Forecaster


def csv_with(tmp_path, frame):
    path = tmp_path / "x.csv"
    frame.to_csv(path, index=False)
    return path


def no_date(t, root):
    return read_series_csv(csv_with(t, pd.DataFrame({"a": [1.0, 2.0]})), "M", "OT")


def missing_value(t, root):
    frame = pd.read_csv(root / "weather.csv")
    frame.loc[3, "OT"] = None
    return read_series_csv(csv_with(t, frame), "M", "OT")


def bad_dates(t, root):
    frame = pd.read_csv(root / "weather.csv")
    frame.loc[0, "date"] = "not a date"
    return read_series_csv(csv_with(t, frame), "M", "OT")


def not_a_csv(t, root):
    path = t / "x.csv"
    path.write_bytes(b"\x00\xff\x00binary")
    return read_series_csv(path, "M", "OT")


def nan_window(t, root):
    model = Forecaster(arch="ffnet_ts_test", num_vars=2, horizon=8)
    history = torch.zeros(2, 96, 2)
    history[1, 5, 0] = float("inf")
    model.training_step((history, torch.zeros(2, 8, 2)), 0)


def horizon_mismatch(t, root):
    model = Forecaster(arch="ffnet_ts_test", num_vars=2, horizon=8)
    model.training_step((torch.zeros(2, 96, 2), torch.zeros(2, 12, 2)), 0)


CASES = {
    "CSV without a date column": (no_date, ValueError, "no 'date' column"),
    "missing value": (missing_value, ValueError, "'OT' row 5"),
    "unparseable dates": (bad_dates, ValueError, "date"),
    "binary file": (not_a_csv, ValueError, "CSV|date"),
    "unknown feature mode": (
        lambda t, r: read_series_csv(r / "weather.csv", "X", "OT"),
        ValueError,
        "features must be",
    ),
    "missing target column": (
        lambda t, r: read_series_csv(r / "weather.csv", "S", "load"),
        ValueError,
        "target column 'load'",
    ),
    "series shorter than look-back + horizon": (
        lambda t, r: TSLibDataModule(
            str(r), "weather.csv", "custom", seq_len=512, pred_len=720
        ).setup("fit"),
        ValueError,
        "shorter than seq_len",
    ),
    "ETT file that is too short": (
        lambda t, r: TSLibDataModule(str(r), "weather.csv", "ETTm1").setup("fit"),
        ValueError,
        "ETTm1 needs at least",
    ),
    "missing CSV": (
        lambda t, r: TSLibDataModule(str(t), "none.csv").num_vars,
        FileNotFoundError,
        "no CSV",
    ),
    "window of the wrong shape": (
        lambda t, r: FFNetForecaster(3, 96, 24)(torch.zeros(1, 48, 3)),
        ValueError,
        "seq_len=96",
    ),
    "patch larger than the window": (
        lambda t, r: FFNetForecaster(3, 2, 24),
        ValueError,
        "at least patch_size",
    ),
    "inf in the input window": (nan_window, ValueError, "NaN or inf"),
    "data horizon differs from the model": (
        horizon_mismatch,
        ValueError,
        "pred_len 12 .*horizon=8",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, custom_root):
    fn, error, match = CASES[case]
    with pytest.raises(error, match=match):
        fn(tmp_path, custom_root)
