"""Pure ``nn.Module`` forecasting models."""

from .ffnet import FFNetForecaster

__all__ = ["FFNetForecaster"]
