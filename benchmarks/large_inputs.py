"""Large inputs within bounded memory: peak RSS and time, each case in a fresh process.

    .venv/bin/python benchmarks/large_inputs.py [--records results/records/cpu/large_inputs]

* super-resolution ×2 of a 4000×3000 photo through tiling (a small FFNet-SR, dim 32, depth 6;
  tiles of 256 LR pixels with the exact receptive-field halo);
* point-cloud segmentation of a 2-million-point scene in 10 m columns (SparseFFNet, grid 5 cm);
* forecasting over a 1-million-step series, windows streamed in batches (96 → 96, 7 variables),
  errors accumulated on the fly.

Each case reports the peak RSS of its process, the size of its output and the wall time; the
"untiled" / "whole" rows show what the same job needs without the bound where that fits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

from peak_memory import peak_mb
from records import print_table, run_name, save_rows


def superres(tile: int | None) -> dict:
    import torch

    from metamixer.core import build_network, deploy
    from metamixer.superres.inference import upscale

    net = build_network("ffnet_sr_light", {"scale": 2}, {"dim": 32, "depth": 6})
    model = deploy(net, "cpu")
    lr = torch.rand(1, 3, 3000, 4000)
    with torch.inference_mode():
        sr = upscale(model, lr, 2, tile=tile)
    return {"output": f"{sr.shape[-1]}×{sr.shape[-2]} RGB"}


def pointcloud(chunk: float | None) -> dict:
    import numpy as np

    import metamixer.pointcloud  # noqa: F401  (registers the architectures)
    from metamixer.core import build_network
    from metamixer.pointcloud.inference import predict_chunked

    rng = np.random.default_rng(0)
    n = 2_000_000
    side = 60.0  # a 60 × 60 m terrain with buildings-like blocks, ~560 points / m²
    xy = rng.uniform(0, side, (n, 2))
    z = 0.3 * np.sin(xy[:, 0] / 5) + np.where((xy % 15 < 6).all(1), 8 * rng.random(n), 0)
    coord = np.column_stack([xy, z]).astype(np.float32)
    feat = rng.standard_normal((n, 6)).astype(np.float32)
    model = build_network(
        "sparse_ffnet", {"in_channels": 6, "num_classes": 5},
        {"enc_depths": (1, 1, 1, 1), "enc_channels": (32, 64, 128, 256), "dec_depths": (1, 1, 1),
         "dec_channels": (32, 64, 128)},
    ).eval()  # fmt: skip
    labels = predict_chunked(model, coord, feat, 0.05, chunk=chunk, context=1.0)
    return {"output": f"{len(labels):,} point labels"}


def forecasting(batch: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    import metamixer.timeseries  # noqa: F401  (registers the architectures)
    from metamixer.core import build_network
    from metamixer.timeseries.data import ForecastWindows

    torch.manual_seed(0)
    steps, m = 1_000_000, 7
    t = torch.arange(steps, dtype=torch.float32)[:, None]
    series = (
        torch.sin(2 * torch.pi * t / 24 + torch.arange(m)) + 0.1 * torch.randn(steps, m)
    ).numpy()
    windows = ForecastWindows(series, 96, 96)
    model = build_network("ffnet_ts", {"num_vars": m, "seq_len": 96, "horizon": 96}, {"dim": 16})
    model = model.eval()
    se, count = 0.0, 0
    with torch.inference_mode():
        for history, future in DataLoader(windows, batch_size=batch):
            se += float((model(history) - future).square().sum())
            count += future.numel()
    return {"output": f"{len(windows):,} windows", "MSE": se / count}


CASES = {
    "sr 4000×3000 ×2, tiles of 256": ("superres", 256),
    "pointcloud 2M points, 10 m chunks": ("pointcloud", 10.0),
    "forecast 1M steps, streamed batches of 4096": ("forecasting", 4096),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", help="also write each row as a record under this folder")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        warnings.filterwarnings("ignore")
        fn, param = args.child
        value = None if param == "None" else (int(param) if param.isdigit() else float(param))
        start = time.perf_counter()
        result = globals()[fn](value)
        result.update(seconds=time.perf_counter() - start, peak_mb=peak_mb())
        print(json.dumps(result))
        return
    rows = []
    for name, (fn, param) in CASES.items():
        cmd = [sys.executable, __file__, "--child", fn, str(param)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name}: {result}", flush=True)
        metrics = {"peak RSS (MB)": result.pop("peak_mb"), "time (s)": result.pop("seconds")}
        rows.append({"group": {"case": name, "output": result.pop("output")},
                     "metrics": {**metrics, **result}})  # fmt: skip
    print_table(rows)
    if args.records:  # runs accumulate: tables show mean ± std over runs
        save_rows(Path(args.records), rows, run_name())


if __name__ == "__main__":
    main()
