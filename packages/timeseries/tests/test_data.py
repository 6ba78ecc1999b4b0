import numpy as np
import pandas as pd
import pytest

from metamixer.timeseries.data import TSLibDataModule, read_series_csv, split_borders


def window_counts(dm):
    dm.setup("fit")
    return {k: len(v) for k, v in dm.windows.items()}


@pytest.mark.parametrize(
    "pred_len,expected",
    [
        (96, (8449, 2785, 2785)),
        (192, (8353, 2689, 2689)),
        (336, (8209, 2545, 2545)),
        (720, (7825, 2161, 2161)),
    ],
)
def test_etth1_windows_match_the_reference_loader(ett_root, pred_len, expected):
    dm = TSLibDataModule(str(ett_root), "ETTh1.csv", "ETTh1", seq_len=96, pred_len=pred_len)
    assert tuple(window_counts(dm).values()) == expected
    assert dm.num_vars == 7


def test_ettm1_uses_the_same_months_in_15_minute_steps(ett_root):
    dm = TSLibDataModule(str(ett_root), "ETTm1.csv", "ETTm1", seq_len=96, pred_len=96)
    assert tuple(window_counts(dm).values()) == (34369, 11425, 11425)


def test_custom_split_is_70_10_20_and_target_goes_last(custom_root):
    borders = split_borders("custom", 1000, 96)
    assert borders == {"train": (0, 700), "val": (604, 800), "test": (704, 1000)}
    _, _, names = read_series_csv(custom_root / "weather.csv", "M", "T (degC)")
    assert names == ["p (mbar)", "OT", "T (degC)"]
    dm = TSLibDataModule(
        str(custom_root), "weather.csv", "custom", target="T (degC)", seq_len=96, pred_len=24
    )
    assert dm.variables == names


def test_scaler_is_fitted_on_the_training_rows_only(ett_root):
    dm = TSLibDataModule(str(ett_root), "ETTh1.csv", "ETTh1")
    dm.setup("fit")
    raw = pd.read_csv(ett_root / "ETTh1.csv").iloc[:, 1:].to_numpy(np.float32)
    np.testing.assert_allclose(dm.scaler.mean, raw[:8640].mean(0), rtol=1e-5)
    train = dm.windows["train"].values.numpy()
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    first_test_history, first_future = dm.windows["test"][0]
    np.testing.assert_allclose(
        first_future[0].numpy(), (raw[11520] - dm.scaler.mean) / dm.scaler.std, rtol=1e-5
    )
    assert first_test_history.shape == (96, 7)


def test_single_target_feature_mode(ett_root):
    dm = TSLibDataModule(str(ett_root), "ETTh1.csv", "ETTh1", features="S", target="OT")
    dm.setup("fit")
    assert dm.num_vars == 1 and dm.windows["train"][0][0].shape == (96, 1)


def test_csv_without_date_column(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="no 'date' column"):
        read_series_csv(tmp_path / "x.csv", "M", "OT")


def test_non_numeric_cell_names_column_and_row(custom_root):
    frame = pd.read_csv(custom_root / "weather.csv")
    frame.loc[10, "p (mbar)"] = "n/a"
    frame.to_csv(custom_root / "weather.csv", index=False)
    with pytest.raises(ValueError, match=r"'p \(mbar\)' row 12"):
        read_series_csv(custom_root / "weather.csv", "M", "OT")


def test_series_shorter_than_window(custom_root):
    dm = TSLibDataModule(str(custom_root), "weather.csv", "custom", seq_len=336, pred_len=720)
    with pytest.raises(ValueError, match=r"shorter than seq_len \+ pred_len"):
        dm.setup("fit")


def test_too_short_ett_file(custom_root):
    dm = TSLibDataModule(str(custom_root), "weather.csv", "ETTh1")
    with pytest.raises(ValueError, match="needs at least 14400 rows"):
        dm.setup("fit")


def test_missing_file_and_unknown_dataset(tmp_path, custom_root):
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        TSLibDataModule(str(tmp_path), "nope.csv").setup("fit")
    with pytest.raises(ValueError, match="unknown dataset 'ETTh3'"):
        TSLibDataModule(str(custom_root), "weather.csv", "ETTh3").setup("fit")
