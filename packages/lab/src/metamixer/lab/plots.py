"""Figures (PNG, written atomically): confusion matrices, ERF maps, sparsity curves, coefficient maps,
per-class key statistics.  Analysis figures carry the provenance of their weights (``weights``).

matplotlib is imported when a figure is drawn, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from metamixer.core.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write a PNG atomically (temp file + rename) and close the figure."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
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


def plot_erf(
    maps: dict[str, Tensor],
    ratios: dict[str, dict[float, float]],
    path: Path,
    weights: dict[str, str] | None = None,
    note: str | None = None,
) -> Path:
    """ERF heat maps side by side (log scale, normalised), with the area ratios in the titles.

    ``weights``: each model's provenance ("untrained (initialisation)", "trained here: RUN",
    "weights: FILE"), printed under its name; ``note``: a line added to the figure title."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.8), squeeze=False)
    for ax, (name, erf) in zip(axes[0], maps.items(), strict=True):
        shown = torch.log10(erf / erf.max() + 1e-6).numpy()
        ax.imshow(shown, cmap="RdYlGn", vmin=-6, vmax=0)
        r = ratios.get(name, {})
        label = (weights or {}).get(name)
        ax.set_title(
            "\n".join(
                [name]
                + ([_wrap(label)] if label else [])
                + ["  ".join(f"{int(t * 100)}%: {a:.3f}" for t, a in r.items())]
            ),
            fontsize=8,
        )
        ax.axis("off")
    title = "effective receptive field (log10 contribution); area share holding t% of it"
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10, y=1.06 if note else 1.03)
    return save_figure(fig, path)


def _wrap(text: str, width: int = 48) -> str:
    """Long provenance labels (checkpoint paths) over several lines."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False))


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


def plot_sparsity(
    rows: Sequence[dict],
    path: Path,
    title: str = "coefficient sparsity",
    weights: str | None = None,
) -> Path:
    """Share of active coefficients against depth, token mixers vs channel mixers; ``weights``
    (the provenance of the weights) is added to the title."""
    return plot_sparsity_models({"": rows}, path, title, {"": weights} if weights else None)


def plot_sparsity_models(
    rows: dict[str, Sequence[dict]],
    path: Path,
    title: str = "coefficient sparsity",
    weights: dict[str, str] | None = None,
) -> Path:
    """Several models' sparsity curves in one figure (x: mixer index / last index, so networks
    of different depth line up); ``weights``: each model's provenance, listed under the title."""
    plt = _pyplot()
    several = len(rows) > 1
    fig, ax = plt.subplots(figsize=(8, 3.8 + (0.25 * len(rows) if several else 0)))
    kinds = (("tokens", "o", "--", "token mixers"), ("channels", "s", "-", "channel mixers"))
    for m, (name, model_rows) in enumerate(rows.items()):
        last = max((r["depth"] for r in model_rows), default=1) or 1
        for mixes, marker, style, kind in kinds:
            sel = [r for r in model_rows if r["mixes"] == mixes]
            if sel:
                ax.plot(
                    [r["depth"] / last if several else r["depth"] for r in sel],
                    [r["active"] for r in sel],
                    marker=marker,
                    linestyle=style,
                    color=f"C{m}" if several else None,
                    label=f"{name}: {kind}" if name else kind,
                )
    ax.set_xlabel("relative depth (mixer index / last)" if several else "mixer index (depth)")
    ax.set_ylabel("share of coefficients > 0")
    ax.set_ylim(0, 1)
    lines = [
        (f"{name}: {label}" if name else label) for name, label in (weights or {}).items() if label
    ]
    ax.set_title("\n".join([title, *lines]), fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


def plot_coefficient_maps(
    image: Tensor,
    maps: Tensor,
    channels: Tensor,
    path: Path,
    layer: str,
    weights: str | None = None,
) -> Path:
    """The image and its strongest coefficient maps (upsampled) overlaid on it; ``weights`` (the
    provenance of the weights) is added to the title."""
    plt = _pyplot()
    k = len(maps)
    fig, axes = plt.subplots(1, k + 1, figsize=(3 * (k + 1), 3.4), squeeze=False)
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
    fig.suptitle(f"coefficients of {layer}" + (f"\n{weights}" if weights else ""), fontsize=9)
    return save_figure(fig, path)


def plot_key_statistics(
    rows: Sequence[dict],
    path: Path,
    class_names: Sequence[str] | None = None,
    layer: str | None = None,
    title: str = "per-class keys",
    weights: str | None = None,
) -> Path:
    """Left: per mixer, the share of its active keys that fire for every class, for at least half
    of them, and for one class only.  Right: the class × key firing map of ``layer`` (default: the
    deepest channel mixer), keys ordered by how many classes they fire for.  Rows come from
    ``metamixer.lab.analysis.key_statistics``."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.4]}
    )
    x = list(range(len(rows)))
    for field, style in (("shared_all", "o-"), ("shared_half", "s-"), ("specific", "^--")):
        left.plot(x, [r[field] for r in rows], style, label=field.replace("_", " "))
    left.set_xticks(x, [f"{r['depth']}{r['mixes'][0]}" for r in rows], fontsize=7)
    left.set_xlabel("mixer index (t = token, c = channel mixer)")
    left.set_ylabel("share of active keys")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    left.set_title("keys shared across classes", fontsize=9)
    if layer is None:
        channel = [r for r in rows if r["mixes"] == "channels"]
        layer = (channel or list(rows))[-1]["layer"]
    row = next(r for r in rows if r["layer"] == layer)
    fires = row["fires"]
    first = fires.float().argmax(0).tolist()  # the first class each key fires for
    active = [k for k in range(row["keys"]) if row["classes_per_key"][k] > 0]
    order = sorted(active, key=lambda k: (-int(row["classes_per_key"][k]), first[k], k))
    shown = fires[:, order].float().numpy()
    right.imshow(shown, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    names = list(class_names) if class_names is not None else None
    labels = [names[c] if names else str(c) for c in row["classes_seen"]]
    right.set_yticks(range(len(labels)), labels, fontsize=7)
    right.set_xlabel(
        f"the {row['active']} of {row['keys']} keys that fire for some class, sorted by how many"
    )
    right.set_title(f"{layer}: which keys fire for which class", fontsize=9)
    fig.suptitle(title + (f"\n{_wrap(weights, 120)}" if weights else ""), fontsize=10, y=1.04)
    return save_figure(fig, path)
