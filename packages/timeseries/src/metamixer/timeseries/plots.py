"""Forecast plots: history, truth and prediction of a few test windows."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from metamixer.lab.plots import save_figure


def plot_forecasts(
    history: Tensor,
    future: Tensor,
    prediction: Tensor,
    path: Path,
    count: int = 4,
    variable: int = -1,
) -> Path:
    """One panel per window: ``history (B, L, M)``, ``future`` / ``prediction (B, H, M)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(history))
    step = max(1, len(history) // count)
    fig, axes = plt.subplots(count, 1, figsize=(9, 2.2 * count), squeeze=False)
    seq_len, horizon = history.shape[1], future.shape[1]
    for ax, i in zip(axes[:, 0], range(0, step * count, step), strict=False):
        ax.plot(range(seq_len), history[i, :, variable], color="0.4", lw=1, label="history")
        t = range(seq_len, seq_len + horizon)
        ax.plot(t, future[i, :, variable], color="tab:blue", lw=1, label="truth")
        ax.plot(t, prediction[i, :, variable], color="tab:orange", lw=1.2, label="FFNet")
        ax.axvline(seq_len - 0.5, color="0.8", lw=0.8)
        ax.set_ylabel(f"window {i}")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("time step (scaled values)")
    return save_figure(fig, path)


def plot_forecast(history: Tensor, forecast: Tensor, names: list[str], path: Path) -> Path:
    """One panel per variable, named: the history ``(L, M)`` and the forecast ``(H, M)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = len(names)
    fig, axes = plt.subplots(m, 1, figsize=(9, 2.0 * m), squeeze=False)
    seq_len, horizon = history.shape[0], forecast.shape[0]
    for ax, j in zip(axes[:, 0], range(m), strict=True):
        ax.plot(range(seq_len), history[:, j], color="0.4", lw=1, label="history")
        ax.plot(range(seq_len, seq_len + horizon), forecast[:, j], color="tab:orange", lw=1.2,
                label="forecast")  # fmt: skip
        ax.set_ylabel(names[j])
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=2)
    axes[-1, 0].set_xlabel("time step")
    return save_figure(fig, path)
