"""Effective receptive field of a forecaster over its look-back window.

    python -m metamixer.timeseries.analyze --checkpoint RUN/checkpoints/last.ckpt \
        --root data/timeseries --data_path elecdemand.csv --out runs/analysis

The ERF is ``|∂ Σ forecast / ∂ history|`` summed over the variables and averaged over test
windows: how much each past step influences the forecast (a large-kernel FFNet spreads it over
the whole window; a short-kernel model concentrates it on the last steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from metamixer.core import network_from_checkpoint
from metamixer.core.checkpoint import read_checkpoint
from metamixer.lab.cli import run_cli
from metamixer.lab.plots import plot_erf_1d

from . import models as _models  # noqa: F401  (registers the forecaster architectures)
from .data import TSLibDataModule
from .models import FFNetForecaster


def lookback_erf(model: nn.Module, histories: Tensor) -> Tensor:
    """Mean |gradient| of the summed forecast w.r.t. each look-back step: ``(L,)``."""
    x = histories.detach().clone().requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None  # x requires grad and the forecast depends on it
    return x.grad.abs().sum(2).mean(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Forecaster Lightning checkpoint")
    parser.add_argument("--root", help="data folder (default: the checkpoint's)")
    parser.add_argument("--data_path", help="CSV file name (default: the checkpoint's)")
    parser.add_argument("--dataset", help="split rule (default: the checkpoint's)")
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--out", default="runs/analysis")
    args = parser.parse_args(argv)
    model = cast(FFNetForecaster, network_from_checkpoint(args.checkpoint))
    saved = read_checkpoint(args.checkpoint).get("datamodule_hyper_parameters") or {}
    data: dict[str, Any] = {
        k: getattr(args, k) or saved.get(k) for k in ("root", "data_path", "dataset")
    }
    missing = [k for k, v in data.items() if v is None]
    if missing:
        raise ValueError(
            f"{args.checkpoint} records no data {missing}; give --{' --'.join(missing)}"
        )
    keep = ("features", "target", "scale")
    dm = TSLibDataModule(**data, **{k: saved[k] for k in keep if k in saved},
                         seq_len=model.seq_len, pred_len=model.horizon)  # fmt: skip
    dm.setup("test")
    test = dm.windows["test"]
    step = max(1, len(test) // args.windows)
    histories = torch.stack([test[i][0] for i in range(0, len(test), step)][: args.windows])
    erf = lookback_erf(model, histories)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(plot_erf_1d({Path(args.checkpoint).stem: erf}, out / "erf_1d.png"))
    (out / "erf_1d.json").write_text(json.dumps(erf.tolist()))


if __name__ == "__main__":
    run_cli(main)
