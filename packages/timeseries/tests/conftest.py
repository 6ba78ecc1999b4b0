import numpy as np
import pandas as pd
import pytest


def write_tslib_csv(path, rows, columns, freq="h", seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    values = np.sin(2 * np.pi * t / 24 + np.arange(len(columns))) + 0.1 * rng.normal(
        size=(rows, len(columns))
    )
    frame = pd.DataFrame(values + np.arange(len(columns)), columns=columns)
    frame.insert(
        0,
        "date",
        pd.date_range("2016-07-01", periods=rows, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
    )
    frame.to_csv(path, index=False)
    return path


ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


@pytest.fixture
def ett_root(tmp_path):
    """ETTh1.csv with the real shape (17,420 rows × 7 variables) and ETTm1.csv (69,680 rows)."""
    write_tslib_csv(tmp_path / "ETTh1.csv", 17420, ETT_COLUMNS)
    write_tslib_csv(tmp_path / "ETTm1.csv", 69680, ETT_COLUMNS, freq="15min")
    return tmp_path


@pytest.fixture
def custom_root(tmp_path):
    write_tslib_csv(tmp_path / "weather.csv", 1000, ["p (mbar)", "T (degC)", "OT"], freq="10min")
    return tmp_path
