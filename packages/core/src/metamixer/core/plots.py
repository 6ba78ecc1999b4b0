"""Figures (PNG, written atomically): confusion matrices, ERF maps, sparsity curves, coefficient maps.

matplotlib is imported when a figure is drawn, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write a PNG atomically (temp file + rename) and close the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    _pyplot().close(fig)
    return path


def plot_confusion_matrix(matrix: Tensor, class_names: Sequence[str] | None, path: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG heat map."""
    plt = _pyplot()
    counts = matrix.to(torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(rates)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.55 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = counts.diag().sum() / counts.sum().clamp_min(1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    return save_figure(fig, path)


def plot_erf(maps: dict[str, Tensor], ratios: dict[str, dict[float, float]], path: Path) -> Path:
    """ERF heat maps side by side (log scale, normalised), with the area ratios in the titles."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.4), squeeze=False)
    for ax, (name, erf) in zip(axes[0], maps.items(), strict=True):
        shown = torch.log10(erf / erf.max() + 1e-6).numpy()
        ax.imshow(shown, cmap="RdYlGn", vmin=-6, vmax=0)
        r = ratios.get(name, {})
        ax.set_title(
            name + "\n" + "  ".join(f"{int(t * 100)}%: {a:.3f}" for t, a in r.items()), fontsize=9
        )
        ax.axis("off")
    fig.suptitle("effective receptive field (log10 contribution); area share holding t% of it")
    return save_figure(fig, path)


def plot_erf_1d(curves: dict[str, Tensor], path: Path) -> Path:
    """ERF over a look-back window: contribution per time step (normalised)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    for name, curve in curves.items():
        ax.plot((curve / curve.max()).numpy(), label=name)
    ax.set_xlabel("look-back step (oldest → newest)")
    ax.set_ylabel("normalised |∂ forecast / ∂ input|")
    ax.legend()
    return save_figure(fig, path)


def plot_sparsity(rows: Sequence[dict], path: Path, title: str = "coefficient sparsity") -> Path:
    """Share of active coefficients against depth, token mixers vs channel mixers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for mixes, marker in (("tokens", "o"), ("channels", "s")):
        sel = [r for r in rows if r["mixes"] == mixes]
        if sel:
            ax.plot(
                [r["depth"] for r in sel],
                [r["active"] for r in sel],
                marker=marker,
                label=f"{mixes} mixers",
            )
    ax.set_xlabel("mixer index (depth)")
    ax.set_ylabel("share of coefficients > 0")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def plot_coefficient_maps(
    image: Tensor, maps: Tensor, channels: Tensor, path: Path, layer: str
) -> Path:
    """The image and its strongest coefficient maps (upsampled) overlaid on it."""
    plt = _pyplot()
    k = len(maps)
    fig, axes = plt.subplots(1, k + 1, figsize=(3 * (k + 1), 3.2), squeeze=False)
    img = image.float()
    img = (img - img.min()) / (img.max() - img.min() + 1e-9)
    shown = img.permute(1, 2, 0).squeeze(-1).numpy()
    axes[0, 0].imshow(shown, cmap="gray" if img.shape[0] == 1 else None)
    axes[0, 0].set_title("input")
    size = image.shape[-2:]
    for ax, m, c in zip(axes[0, 1:], maps, channels.tolist(), strict=True):
        up = torch.nn.functional.interpolate(m[None, None], size=size, mode="bilinear")[0, 0]
        ax.imshow(shown, cmap="gray" if img.shape[0] == 1 else None)
        ax.imshow(up.numpy(), cmap="jet", alpha=0.5)
        ax.set_title(f"key {c}")
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(f"coefficients of {layer}")
    return save_figure(fig, path)
