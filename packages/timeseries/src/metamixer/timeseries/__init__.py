"""metamixer.timeseries: 1D FFNet for long-term forecasting (TSLib benchmarks, Lightning, gluonts)."""

from typing import Any

from .models import FFNetForecaster
from .weights import load_authors_forecaster

__all__ = ["FFNetEstimator", "FFNetForecaster", "load_authors_forecaster"]


def __getattr__(name: str) -> Any:
    if name == "FFNetEstimator":  # gluonts is imported only when its estimator is asked for
        from .estimator import FFNetEstimator

        return FFNetEstimator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
