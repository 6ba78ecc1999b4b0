"""gluonts: FFNetEstimator trains, predicts distributions, evaluates and round-trips to disk."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset
from gluonts.evaluation import Evaluator, make_evaluation_predictions
from gluonts.model.predictor import Predictor

from metamixer.timeseries.estimator import FFNetEstimator


@pytest.fixture
def dataset():
    t = np.arange(600)
    series = [
        10 + np.sin(2 * np.pi * t / 24) * (i + 1) + 0.1 * np.random.default_rng(i).normal(size=600)
        for i in range(3)
    ]
    return ListDataset(
        [{"start": pd.Period("2020-01-01 00:00", freq="h"), "target": s} for s in series], freq="h"
    )


def test_train_predict_evaluate_serialize(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up here
    run_dir = tmp_path / "runs"
    estimator = FFNetEstimator(
        prediction_length=24,
        context_length=48,
        arch_args={
            "dim": 16,
            "token_kernels": 13,
            "channel_kernels": 13,
            "channel_small_kernels": 3,
        },
        batch_size=16,
        num_batches_per_epoch=5,
        run_dir=str(run_dir),
        trainer_kwargs={"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
    )
    predictor = estimator.train(dataset)
    forecasts, series = make_evaluation_predictions(dataset, predictor, num_samples=50)
    forecasts, series = list(forecasts), list(series)
    assert forecasts[0].mean.shape == (24,)
    assert (forecasts[0].quantile(0.9) > forecasts[0].quantile(0.1)).all()
    agg, _ = Evaluator()(series, forecasts)
    assert np.isfinite(agg["MASE"]) and np.isfinite(agg["mean_wQuantileLoss"])
    assert {p.name for p in tmp_path.iterdir()} == {"runs"}, "files leaked into the working dir"
    assert any(run_dir.rglob("*.ckpt"))

    out = tmp_path / "runs" / "predictor"
    out.mkdir()
    predictor.serialize(Path(out))
    restored = Predictor.deserialize(Path(out))
    original = next(iter(predictor.predict(dataset)))
    again = next(iter(restored.predict(dataset)))
    np.testing.assert_allclose(again.mean, original.mean, rtol=1e-5)


def test_the_package_exports_the_estimator_as_the_readme_writes_it():
    from metamixer.timeseries import FFNetEstimator
    from metamixer.timeseries.estimator import FFNetEstimator as defined

    assert FFNetEstimator is defined
