"""The gluonts predictor forecasts the user's CSV with its quantiles:
``python -m metamixer.timeseries.predict PREDICTOR_FOLDER my.csv`` (run here in-process)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset

from metamixer.timeseries.estimator import FFNetEstimator
from metamixer.timeseries.predict import main

DATA = Path(__file__).resolve().parents[3] / "data" / "timeseries" / "elecdemand.csv"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    root = tmp_path_factory.mktemp("gluonts")
    t = np.arange(400)
    series = ListDataset(
        [{"start": pd.Period("2014-01-01 00:00", freq="30min"), "target": 4 + np.sin(t / 8)}],
        freq="30min",
    )
    estimator = FFNetEstimator(
        prediction_length=12, context_length=24, arch_args={"dim": 8}, batch_size=8,
        num_batches_per_epoch=2, run_dir=str(root / "train"),
        trainer_kwargs={"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
    )  # fmt: skip
    folder = root / "predictor"
    folder.mkdir()
    estimator.train(series).serialize(folder)
    return folder


@pytest.mark.filterwarnings("ignore:Using `json`-module")
def test_forecast_csv_has_the_mean_and_the_quantiles_of_every_variable(predictor, tmp_path):
    rows = DATA.read_text().splitlines()
    (tmp_path / "mine.csv").write_text("\n".join(rows[:200]) + "\n")
    main([str(predictor), str(tmp_path / "mine.csv"), f"--default_root_dir={tmp_path / 'runs'}"])
    (out,) = (tmp_path / "runs/timeseries/predictor").glob("predict-*/predictions")
    table = list(csv.DictReader((out / "forecast.csv").read_text().splitlines()))
    header = list(table[0])
    assert header[:5] == ["date", "WorkDay", "WorkDay_q0.1", "WorkDay_q0.5", "WorkDay_q0.9"]
    assert header[-4:] == ["Demand", "Demand_q0.1", "Demand_q0.5", "Demand_q0.9"]
    assert len(table) == 12 and table[0]["date"] > rows[199].split(",")[0].replace(" ", "T")
    for row in table:
        assert float(row["Demand_q0.1"]) <= float(row["Demand_q0.5"]) <= float(row["Demand_q0.9"])
    assert (out / "forecast.png").stat().st_size > 1000

    main([str(predictor), str(tmp_path / "mine.csv"), "--target=Demand", "--quantiles", "0.05",
          "0.95", f"--default_root_dir={tmp_path / 'runs'}"])  # fmt: skip
    newest = sorted((tmp_path / "runs/timeseries/predictor").glob("predict-*"))[-1]
    header = (newest / "predictions/forecast.csv").read_text().splitlines()[0]
    assert header == "date,Demand,Demand_q0.05,Demand_q0.95"


@pytest.mark.filterwarnings("ignore:Using `json`-module")
def test_inputs_the_predictor_cannot_take_are_refused_and_nothing_is_written(predictor, tmp_path):
    rows = DATA.read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(rows[:11]) + "\n")
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"short.csv has 10 rows; the model reads the last 24"):
        main([str(predictor), str(tmp_path / "short.csv"), f"--default_root_dir={runs}"])
    with pytest.raises(ValueError, match=r"quantiles must lie strictly between 0 and 1"):
        main([str(predictor), str(DATA), "--quantiles", "0.5", "1", f"--default_root_dir={runs}"])
    foreign = tmp_path / "foreign"
    shutil.copytree(predictor, foreign)
    description = json.loads((foreign / "predictor.json").read_text())
    description["kwargs"]["forecast_generator"]["class"] = "os.system"
    (foreign / "predictor.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"asks to build os\.system; only gluonts and metamixer"):
        main([str(foreign), str(DATA), f"--default_root_dir={runs}"])
    assert not runs.exists()
