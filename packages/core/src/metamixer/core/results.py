"""Result records: one small JSON per tested run, and tables collected from them.

Every ``fit --test_after_fit true`` / ``test`` writes ``record.json`` into its run folder: the
metrics, the resolved config and its hash, the code version (git commit, and whether the tree had
uncommitted changes), the data's identity (data module class, its arguments, and a checksum of the
files it reads), the seed, the hardware and the wall time.

    python -m metamixer.core.results collect runs/ --out results.md [--csv results.csv]

gathers the records found under the given folders into one table (a row per record: modality,
experiment, subcommand, the metrics).  Records of another code version stay readable; the
table marks them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RECORD = "record.json"
#: argument names whose values are files or folders a data module reads
DATA_PATH_KEYS = ("root", "path", "data_path", "train_root", "val_roots", "test_roots")


def code_version(folder: Path | None = None) -> dict[str, Any]:
    """The git commit of ``folder``'s repository (default: this file's) and whether it was dirty."""
    folder = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=folder, capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        return {"commit": commit, "dirty": bool(dirty.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def checksum(paths: Sequence[Path], limit: int = 1 << 30) -> str | None:
    """SHA-256 over the files (folders: every file below, sorted) — names, sizes and contents, the
    contents only up to ``limit`` bytes in total (beyond that, names and sizes)."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    if not files:
        return None
    digest, budget = hashlib.sha256(), limit
    for f in files:
        size = f.stat().st_size
        digest.update(f"{f.name}:{size};".encode())
        if size <= budget:
            digest.update(f.read_bytes())
            budget -= size
    return digest.hexdigest()


def data_identity(datamodule: Any) -> dict[str, Any]:
    """The data module's class and arguments, and a checksum of the files it reads (a TSLib
    ``root`` + ``data_path`` pair: that CSV only)."""
    hp = dict(getattr(datamodule, "hparams", {}) or {})
    if "root" in hp and "data_path" in hp:
        candidates = [Path(hp["root"]) / str(hp["data_path"])]
    else:
        values = [hp.get(k) for k in DATA_PATH_KEYS]
        flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
        candidates = [Path(v) for v in flat if isinstance(v, str)]
    plain = (str, int, float, bool, list, type(None))
    return {
        "class": f"{type(datamodule).__module__}.{type(datamodule).__name__}",
        "args": {k: v for k, v in hp.items() if isinstance(v, plain) and not k.startswith("_")},
        "sha256": checksum([p for p in candidates if p.exists()]),
    }


def hardware() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip


def write_record(folder: Path, *, modality: str, experiment: str, subcommand: str,
                 metrics: Mapping[str, float], config_yaml: str, seed: Any, datamodule: Any,
                 started: float) -> Path:  # fmt: skip
    """Write ``record.json`` into a run folder (atomically)."""
    record = {
        "modality": modality, "experiment": experiment, "subcommand": subcommand,
        "metrics": dict(metrics), "seed": seed,
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(), "config": config_yaml,
        "code": code_version(), "data": data_identity(datamodule), "hardware": hardware(),
        "wall_seconds": round(time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, folder / RECORD)
    return folder / RECORD


def load_records(folders: Sequence[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RECORD)):
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{path} is not a readable record: {err}") from err
            record["path"] = str(path)
            records.append(record)
    return records


def table(
    records: Sequence[Mapping[str, Any]], current: str | None
) -> tuple[list[str], list[list]]:
    """Header and rows; a record of another commit than ``current`` is marked ``*``."""
    metrics = sorted({k for r in records for k in r["metrics"]})
    header = ["modality", "experiment", "subcommand", "seed", "code", *metrics]
    rows = []
    for r in records:
        commit = (r.get("code") or {}).get("commit") or "?"
        mark = "" if current is None or commit == current else " *"
        rows.append([r["modality"], r["experiment"], r["subcommand"], r.get("seed"),
                     commit[:8] + mark, *(r["metrics"].get(m, "") for m in metrics)])  # fmt: skip
    return header, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    collect = sub.add_parser("collect", help="one table from the records under some folders")
    collect.add_argument("folders", nargs="+")
    collect.add_argument("--out", help="markdown table (default: print)")
    collect.add_argument("--csv", help="also write the table as CSV")
    args = parser.parse_args(argv)
    records = load_records([Path(f) for f in args.folders])
    if not records:
        raise SystemExit(f"error: no {RECORD} under {', '.join(args.folders)}")
    header, rows = table(records, code_version().get("commit"))

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if any(row[4].endswith("*") for row in rows):
        lines.append("\n`*` recorded by another code version than the current one.")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])


if __name__ == "__main__":
    main()
