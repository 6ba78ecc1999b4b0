"""A sweep's reports from its records: ``results.csv``, ``results.md`` and one figure per axis."""

from __future__ import annotations

import csv
from pathlib import Path

from metamixer.lab import results
from metamixer.lab.study import machine_label


def write_reports(records: list[dict], folder: Path, spec: dict) -> str:
    """``results.csv`` (one row per run), ``results.md`` (the study's report, also returned:
    ``metamixer.lab.study_text``) and one figure per axis, from the sweep's records."""
    folder.mkdir(parents=True, exist_ok=True)
    axes = list(spec["grid"])
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["modality", "axis", "value", "seed", "metric", "result", "commit", "machine"]
        )
        for r in sorted(records, key=lambda r: (r["modality"], r["order"], str(r["seed"]))):
            ((metric, value),) = r["metrics"].items()
            writer.writerow(
                [
                    r["modality"],
                    r["group"]["axis"],
                    r["group"]["value"],
                    r["seed"],
                    metric,
                    value,
                    (r.get("code") or {}).get("commit"),
                    machine_label(r),
                ]
            )
    table = results.block(records) + "\n"
    (folder / "results.md").write_text(table)
    for axis in axes:
        plot_axis(records, axis, spec, folder / f"axis-{axis}.png")
    return table


def plot_axis(records: list[dict], axis: str, spec: dict, path: Path) -> None:
    """One panel per modality with records on ``axis``: every seed's metric per value (dots) and
    the mean ± std (bar), the baseline's mean ± std as a band.  No such modality: no figure."""
    from metamixer.lab.plots import _pyplot, save_figure

    plt = _pyplot()
    on_axis = {
        r["modality"] for r in records if not r.get("reference") and r["group"]["axis"] == axis
    }
    modalities = [m for m in spec["modalities"] if m in on_axis]
    if not modalities:
        path.unlink(missing_ok=True)  # a figure from an earlier report
        return
    fig, panels = plt.subplots(
        1, len(modalities), figsize=(3.6 * len(modalities), 3.2), squeeze=False
    )
    for ax, modality in zip(panels[0], modalities, strict=True):
        mine = sorted((r for r in records if r["modality"] == modality), key=lambda r: r["order"])
        base = next((r["group"]["value"] for r in mine if r.get("reference")), "FFNet")
        by_label: dict[str, list[float]] = {base: []}  # the baseline first
        for r in mine:
            if r.get("reference") or r["group"]["axis"] == axis:
                by_label.setdefault(r["group"]["value"], []).append(
                    next(iter(r["metrics"].values()))
                )
        metric = spec["modalities"][modality]["metric"]
        scale = results.display_scale(metric, [v for vs in by_label.values() for v in vs])
        for i, raw in enumerate(by_label.values()):
            if not raw:
                continue
            values = [scale * v for v in raw]
            mean, std, _ = results.stats(values)
            if i == 0:
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
            color = "black" if i == 0 else "tab:blue"
            ax.errorbar([i], [mean], yerr=[std], fmt="s", color=color, capsize=3)
            ax.scatter([i] * len(values), values, s=8, color="tab:gray", zorder=3)
        labels = list(by_label)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        goal = spec["modalities"][modality].get("goal", "max")
        unit = " in %" if scale == 100.0 else ""
        ax.set_title(
            f"{modality}: {metric}{unit} ({'higher' if goal == 'max' else 'lower'} is better)",
            fontsize=8,
        )
    fig.suptitle(f"{spec['name']}: {axis} (trained here, seeds as dots)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
