"""metamixer.timeseries: 1D FFNet for long-term forecasting (TSLib benchmarks, Lightning, gluonts)."""

from .models import FFNetForecaster

__all__ = ["FFNetForecaster"]
