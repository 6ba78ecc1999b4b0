"""Forecasting peer table on real offline data: FFNet vs gluonts PatchTST / DLinear vs seasonal naive.

    .venv/bin/python benchmarks/timeseries.py            # elecdemand, horizons 96 192 336 720, 3 seeds
    .venv/bin/python benchmarks/timeseries.py --epochs 2 --horizons 96 --out runs/x   # quick look
    .venv/bin/python benchmarks/timeseries.py --csv my.csv --target OT --season 24   # another series

Protocol (TSLib's): one series (by default Demand of fpp2/elecdemand, half-hourly, 2014), custom
70/10/20 split, standardised with training statistics, look-back 96, every test window (stride 1)
scored by MSE / MAE on the scaled values.  Every trained model sees the same training windows: the
same number of epochs over the training split at the same batch size, Adam at the same learning
rate, and is scored with the weights of its epoch with the lowest loss on the validation windows
(TSLib's early-stopping checkpoint; gluonts validates every forecast start in the validation
split).  gluonts' models are probabilistic (Student-t, selected by validation NLL); their point
forecast is the distribution mean.  FFNet runs at width 32 (gluonts' PatchTST d_model) with the
authors' electricity (ECL) expansion, mlp_ratio 12, and two settings chosen on the validation
windows (see docs/timeseries.md): an MAE training objective and dropout 0.5.  It is scored in its
re-parameterized form.  Train time is the fitting wall time including validation; inference time
covers all test windows.
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from gluonts.dataset.common import ListDataset
from gluonts.torch.model.d_linear import DLinearEstimator
from gluonts.torch.model.patch_tst import PatchTSTEstimator
from gluonts.transform import InstanceSampler
from records import slug

from metamixer.core import deploy
from metamixer.lab.results import (
    RECORD,
    checksum,
    grouped_table,
    load_records,
    markdown,
    save_record,
)
from metamixer.lab.stats import correct, welch
from metamixer.timeseries.data import TSLibDataModule
from metamixer.timeseries.lit import Forecaster
from metamixer.timeseries.prepare import elecdemand_frame, write_csv

ELECDEMAND = "data/timeseries/elecdemand.csv"
OUT = "results/records/timeseries-point-peers"
PEERS = ["seasonal naive", "FFNet", "PatchTST", "DLinear"]


def seasonal_naive(history: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """Repeat the last season: ``history (B, L)`` -> ``(B, H)``."""
    last = history[:, -season:]
    reps = math.ceil(horizon / season)
    return last.repeat(1, reps)[:, :horizon]


def score(predict, windows, batch: int = 512) -> tuple[float, float, float]:
    """MSE, MAE over all windows and the inference seconds of ``predict((B, L)) -> (B, H)``."""
    se = ae = n = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            items = [windows[j] for j in range(i, min(i + batch, len(windows)))]
            history = torch.stack([h[:, 0] for h, _ in items])
            future = torch.stack([f[:, 0] for _, f in items])
            error = predict(history) - future
            se += float(error.square().sum())
            ae += float(error.abs().sum())
            n += error.numel()
    return se / n, ae / n, time.perf_counter() - start


def gluonts_point_predictor(module):
    model = module.model.eval()

    def predict(history: torch.Tensor) -> torch.Tensor:
        args, loc, scale = model(past_target=history, past_observed_values=torch.ones_like(history))
        return model.distr_output.distribution(args, loc, scale).mean

    return predict


class EveryForecastStart(InstanceSampler):
    """Every split point between ``min_past`` and ``len - min_future``: TSLib's stride-1 windows."""

    def __call__(self, ts: np.ndarray) -> np.ndarray:
        a, b = self._get_bounds(ts)
        return np.arange(a, b + 1)


def fit_gluonts(estimator_cls, dm: TSLibDataModule, args, run_dir: Path, **kw):
    horizon, seq_len = dm.hparams.pred_len, dm.hparams.seq_len
    train = dm.windows["train"].values[:, 0].numpy()
    train_and_val = np.concatenate([train, dm.windows["val"].values[seq_len:, 0].numpy()])
    estimator = estimator_cls(
        prediction_length=horizon, context_length=seq_len, lr=args.lr,
        batch_size=args.batch_size, num_batches_per_epoch=len(dm.train_dataloader()),
        validation_sampler=EveryForecastStart(min_past=len(train), min_future=horizon),
        trainer_kwargs={
            "max_epochs": args.epochs, "accelerator": "cpu", "enable_progress_bar": False,
            "default_root_dir": str(run_dir), "logger": False,
        },
        **kw,
    )  # fmt: skip

    def dataset(series: np.ndarray) -> ListDataset:
        start = pd.Period("2000-01-01", freq="D")  # the peers use no calendar features
        return ListDataset([{"start": start, "target": series}], freq="D")

    start = time.perf_counter()
    predictor = estimator.train(dataset(train), validation_data=dataset(train_and_val))
    return gluonts_point_predictor(predictor.prediction_net), time.perf_counter() - start


def fit_ffnet(dm: TSLibDataModule, args, run_dir: Path):
    model = Forecaster(
        num_vars=1,
        seq_len=dm.hparams.seq_len,
        horizon=dm.hparams.pred_len,
        arch_args={"dim": args.dim, "mlp_ratio": args.mlp_ratio, "mlp_drop": args.dropout},
        lr=args.lr,
        loss=args.loss,
        patience=0,
        plot_series=0,
    )
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", enable_progress_bar=False, logger=False,
        default_root_dir=str(run_dir),
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, dm)
    train_seconds = time.perf_counter() - start
    best = Forecaster.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True
    )
    model = deploy(best, "cpu")  # the deployment form
    return (lambda history: model(history[..., None])[..., 0]), train_seconds


def fit_model(name: str, dm: TSLibDataModule, args, run_dir: Path):
    """Train one peer on the training windows: ``(predict, training seconds)``."""
    horizon = dm.hparams.pred_len
    run_dir = run_dir / f"{name.replace(' ', '_')}_{horizon}"
    if name == "seasonal naive":
        return partial(seasonal_naive, horizon=horizon, season=args.season), 0.0
    if name == "FFNet":
        return fit_ffnet(dm, args, run_dir)
    if name == "PatchTST":
        return fit_gluonts(PatchTSTEstimator, dm, args, run_dir, patch_len=16, stride=8)
    return fit_gluonts(DLinearEstimator, dm, args, run_dir)


def main(argv: list[str] | None = None) -> list[Path]:
    """Run the benchmark; returns the records written by this call."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.5, help="FFNet dropout (ECL: 0.9)")
    parser.add_argument("--mlp_ratio", type=int, default=12, help="FFNet expansion (ECL: 12)")
    parser.add_argument("--loss", default="mae", choices=["mse", "mae"], help="FFNet objective")
    parser.add_argument("--models", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--dim", type=int, default=32, help="FFNet width (PatchTST's d_model: 32)")
    parser.add_argument("--csv", default=ELECDEMAND, help="TSLib-layout CSV (date + variables)")
    parser.add_argument("--target", default="Demand", help="the series (column) to forecast")
    parser.add_argument("--season", type=int, default=48, help="seasonal naive period (steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--run_dir", default="runs/benchmarks/timeseries")
    parser.add_argument("--out", default=OUT, help="records folder")
    parser.add_argument("--force", action="store_true", help="redo existing records")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    csv = Path(args.csv)
    if args.csv == ELECDEMAND and not csv.exists():
        write_csv(elecdemand_frame(), csv)
    run_dir, out = Path(args.run_dir), Path(args.out)
    written = []
    for horizon in args.horizons:
        dm = TSLibDataModule(
            str(csv.parent), csv.name, "custom", features="S", target=args.target,
            seq_len=96, pred_len=horizon, batch_size=args.batch_size,
        )  # fmt: skip
        dm.setup("fit")
        test = dm.windows["test"]
        for name in args.models:
            # seasonal naive has no seed: one record
            for seed in args.seeds[:1] if name == "seasonal naive" else args.seeds:
                folder = out / f"H{horizon}" / slug(name) / f"seed-{seed}"
                if (folder / RECORD).exists() and not args.force:
                    print(f"H={horizon:4d} {name:15s} seed {seed}: recorded, skipped", flush=True)
                    continue
                L.seed_everything(seed, workers=True)  # each result independent of the others
                predict, train_s = fit_model(name, dm, args, run_dir / f"seed-{seed}")
                mse, mae, infer_s = score(predict, test)
                record = {
                    "group": {"horizon": horizon, "model": name},
                    "metrics": {
                        "MSE": mse,
                        "MAE": mae,
                        "train (s)": round(train_s, 1),
                        "inference (s)": round(infer_s, 2),
                    },
                    "seed": seed,
                    "config": {
                        k: v
                        for k, v in vars(args).items()
                        if k not in ("horizons", "seeds", "models", "force", "out")
                    },
                    "data": {
                        "csv": csv.name,
                        "target": args.target,
                        "seq_len": 96,
                        "checksum": checksum([csv]),
                    },
                    "order": 10 * horizon + PEERS.index(name),
                    "threads": torch.get_num_threads(),
                }
                written.append(save_record(folder, record))
                print(
                    f"H={horizon:4d} {name:15s} seed {seed}: MSE {mse:.4f} MAE {mae:.4f} "
                    f"train {train_s:6.1f}s infer {infer_s:5.2f}s",
                    flush=True,
                )
    found = load_records([out])
    if found:
        print(markdown(grouped_table(found)))
        compare(found)
    return written


def compare(records: list[dict]) -> None:
    """FFNet's test MSE against each trained peer's at each horizon: Welch's difference (FFNet −
    peer) with its 95 % interval, Holm-corrected over all the comparisons printed."""
    mse: dict[tuple[int, str], list[float]] = {}
    for r in records:
        mse.setdefault((r["group"]["horizon"], r["group"]["model"]), []).append(r["metrics"]["MSE"])
    pairs = [
        (h, peer) for (h, peer) in sorted(mse)
        if peer not in ("FFNet", "seasonal naive") and len(mse[h, peer]) > 1
        and len(mse.get((h, "FFNet"), [])) > 1
    ]  # fmt: skip
    tests = [welch(mse[h, "FFNet"], mse[h, peer]) for h, peer in pairs]
    _, holm = correct([t.p for t in tests])
    for (h, peer), t, p in zip(pairs, tests, holm, strict=True):
        print(
            f"H={h}: FFNet − {peer} MSE {t.delta:+.4f} [{t.low:+.4f}, {t.high:+.4f}], "
            f"Holm p {p:.3g} (n {len(mse[h, 'FFNet'])} / {len(mse[h, peer])})"
        )


if __name__ == "__main__":
    main()
