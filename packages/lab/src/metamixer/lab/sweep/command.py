"""The sweep command: ``metamixer sweep FILE`` (``python -m metamixer.lab.sweep FILE``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metamixer.lab.sweep.executors import NAMES, ExecutorError, option_flags
from metamixer.lab.sweep.lock import SweepLocked
from metamixer.lab.sweep.run import rerun, run_sweep

#: the first paragraph of the package's docstring
DESCRIPTION = (sys.modules["metamixer.lab.sweep"].__doc__ or "").split("\n\n")[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metamixer sweep", description=DESCRIPTION)
    parser.add_argument("sweep", help="sweep YAML, e.g. experiments/sweeps/smoke.yaml")
    parser.add_argument("--out", default="runs/sweeps", help="run folders (logs, checkpoints)")
    parser.add_argument(
        "--parallel", type=int, help="concurrent cells (default: the file's, ≤ cores)"
    )
    parser.add_argument("--modalities", nargs="+", help="run only these modalities' cells")
    parser.add_argument("--cells", nargs="+", metavar="PATTERN",
                        help="run only the cells whose tag matches (e.g. baseline 'kernel-*')")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print every cell's command and state; run nothing"
    )
    parser.add_argument(
        "--report", action="store_true", help="only write the reports from the records"
    )
    parser.add_argument("--rerun", metavar="CELL", help="run one recorded cell again and compare")
    parser.add_argument("--executor", choices=NAMES,
                        help="where the cells run (default: the sweep file's executor.name, else "
                        "local); options: --local.KEY, --slurm.KEY, --ray.KEY VALUE (see "
                        "docs/sweeps-on-clusters.md), e.g. --slurm.partition gpu")  # fmt: skip
    args, rest = parser.parse_known_args(argv)
    try:
        flags = option_flags(rest)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    if args.rerun:
        try:
            print(rerun(Path(args.sweep), args.rerun, out, threads=os.cpu_count() or 1))
        except (FileNotFoundError, ValueError, SweepLocked) as err:
            raise SystemExit(f"error: {err}") from None
        return
    try:
        rows, table = run_sweep(
            Path(args.sweep),
            out,
            args.parallel,
            args.dry_run,
            args.modalities,
            args.report,
            args.cells,
            args.executor,
            flags,
        )
    except (FileNotFoundError, ValueError, ExecutorError, SweepLocked) as err:
        raise SystemExit(f"error: {err}") from None
    if args.dry_run:
        return
    print(table)
    failed = [r for r in rows if r["value"] is None]
    if failed:
        summary = "\n".join(
            f"  {r['modality']} {r['setting']} seed {r['seed']}: {r['error']}" for r in failed
        )
        raise SystemExit(
            f"{len(failed)} of {len(rows)} cells failed (run again to retry them):\n{summary}"
        )
