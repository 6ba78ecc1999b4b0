"""Result records: one small JSON per tested run, and tables collected from them.

Every ``fit --test_after_fit true`` / ``test`` writes ``record.json`` into its run folder: the
metrics, the resolved config and its hash, the code version (git commit, and whether the tree had
uncommitted changes), the data's identity (data module class, its arguments, and a checksum of the
files it reads), the seed, the hardware and the wall time.

    python -m metamixer.lab.results collect runs/ --out results.md [--csv results.csv]

gathers the records found under the given folders into one table (a row per record: modality,
experiment, subcommand, the metrics).  Records of another code version stay readable; the
table marks them.

    python -m metamixer.lab.results readme README.md results/records [--docs docs] [--check]

regenerates the result tables of the README and of every page of the documentation (``docs/**/*.md``
beside the README, or ``--docs DIR``) from the records committed under ``results/records``: each
table sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` and holds the records
of folder ``results/records/NAME``; ``--check`` changes nothing and fails naming the page, the table
and the first cell that differs (a hand-edited table, or records that changed).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import os
import platform
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metamixer.core.atomic import write_text
from metamixer.lab.machine import machine

RECORD = "record.json"
#: argument names whose values are files or folders a data module reads
DATA_PATH_KEYS = ("root", "path", "data_path", "train_root", "val_roots", "test_roots")


#: tracked files that runs write or that describe results, not code: changing them leaves the
#: code version clean (a sweep's reports, the generated tables of the README and the documentation,
#: the documentation's figures and site configuration)
OUTPUTS = ("results", "*.md", "docs", "mkdocs.yml")


def code_version(folder: Path | None = None) -> dict[str, Any]:
    """The git commit of ``folder``'s repository (default: this file's) and whether its code was
    changed (files other than ``OUTPUTS``).  ``METAMIXER_CODE_VERSION`` (``COMMIT`` or
    ``COMMIT-dirty``), if set, states it instead: a copy of the tree whose git history differs."""
    folder = folder or Path(__file__).resolve().parent
    stated = os.environ.get("METAMIXER_CODE_VERSION")
    if stated:
        return {"commit": stated.removesuffix("-dirty"), "dirty": stated.endswith("-dirty")}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                *(f":(top,exclude){p}" for p in OUTPUTS)],
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor string:
    float results on CPU may differ in the last digits between CPU models."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def hardware() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "simd": torch.backends.cpu.get_cpu_capability(),  # the kernels torch picked
            "threads": torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip


def save_record(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``folder/record.json`` (atomically), adding the code version, the
    hardware, the ``machine`` (from the record's own hardware where it brings one, e.g. a sweep
    cell's run) and the finishing time.  Benchmarks and sweep cells write their records with
    this; a record with a ``group`` (labels such as ``{"series": …, "model": …}``) is shown in
    README tables as one row per group, each metric as mean ± std over its records (seeds)."""
    full = {"code": code_version(), "hardware": hardware(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}  # fmt: skip
    full["machine"] = record.get("machine") or machine(full["hardware"])
    # insertion order: a group's labels stay in order
    return write_text(folder / RECORD, json.dumps(full, indent=1))


def write_record(folder: Path, *, modality: str, experiment: str, subcommand: str,
                 metrics: Mapping[str, float], config_yaml: str, seed: Any, datamodule: Any,
                 started: float, task: str | None = None,
                 imports: Sequence[str] = ()) -> Path:  # fmt: skip
    """Write a training run's ``record.json`` into its run folder (``imports``: the modules the
    run imported with ``--import``, e.g. a user's mixers)."""
    return save_record(folder, {
        "modality": modality, "task": task or modality, "imports": list(imports),
        "experiment": experiment, "subcommand": subcommand,
        "metrics": dict(metrics), "seed": seed,
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(), "config": config_yaml,
        "data": data_identity(datamodule), "wall_seconds": round(time.time() - started, 1),
    })  # fmt: skip


def load_records(folders: Sequence[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RECORD)):
            if any(part.startswith("before-resume-") for part in path.parts):
                continue  # a resumed run's earlier files (``runs.keep_before_resume``)
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
    """Header and rows; a record of another commit than ``current`` is marked ``*``.  The last
    columns say where each run is (its record's folder) and, for a sweep's cell, the arguments it
    ran with."""
    metrics = sorted({k for r in records for k in r["metrics"]})
    header = ["modality", "experiment", "subcommand", "seed", "code", *metrics, "run", "arguments"]
    rows = []
    for r in records:
        commit = (r.get("code") or {}).get("commit") or "?"
        mark = "" if current is None or commit == current else " *"
        experiment = r.get("experiment") or ", ".join(
            f"{k}={v}" for k, v in r.get("group", {}).items()
        )
        kind = r.get("subcommand") or r.get("kind", "")
        rows.append([r.get("modality", ""), experiment, kind, r.get("seed"), commit[:8] + mark,
                     *(r["metrics"].get(m, "") for m in metrics),
                     str(Path(r["path"]).parent) if "path" in r else "",
                     shlex.join(r.get("cell_args") or [])])  # fmt: skip
    return header, rows


def _metric(name: str, value: Any) -> str:
    if isinstance(value, float) and _is_percent(name):
        return f"{name} {100 * value:.1f}" if value <= 1 else f"{name} {value:.1f}"
    return f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"


def readme_table(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Header + rows for a README table.  Records with a ``group`` give one row per group (see
    ``grouped_table``); others one row per experiment: what ran, its metrics (accuracies, IoUs and
    APs in %; over several seeds ``mean ± std (n)``), its seeds, wall time (the mean) and code
    version."""
    if any("group" in r for r in records):
        return grouped_table(records)
    runs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["modality"], r["experiment"], str(r.get("seed")))):
        runs.setdefault((r["modality"], r["experiment"]), []).append(r)
    rows = [["modality", "experiment", "metrics", "seed", "wall time", "code"]]
    for (modality, experiment), members in runs.items():
        names = sorted({k for r in members for k in r["metrics"]})
        if len(members) == 1:
            metrics = ", ".join(_metric(k, members[0]["metrics"][k]) for k in names)
        else:
            metrics = ", ".join(
                f"{k} {mean_std(k, [r['metrics'][k] for r in members if k in r['metrics']])}"
                for k in names
            )
        wall = sum(r.get("wall_seconds", 0) for r in members) / len(members)
        minutes, seconds = divmod(round(wall), 60)
        seeds = ", ".join(str(r.get("seed")) for r in members)
        commits = ", ".join(sorted({_commit(r) for r in members}))
        rows.append([modality, experiment, metrics, seeds, f"{minutes} min {seconds} s", commits])
    return rows


def _commit(record: Mapping[str, Any]) -> str:
    code = record.get("code") or {}
    return (code.get("commit") or "?")[:8] + (" (dirty)" if code.get("dirty") else "")


def stats(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var**0.5, len(values)


def mean_std(name: str, values: Sequence[float], reference: Sequence[float] = ()) -> str:
    """``mean ± std (n)`` (sample std; accuracies, IoUs and APs in %); with ``reference`` values
    also the difference of the means (untested: a study's tests are ``metamixer.lab.study``)."""
    scale = display_scale(name, [*values, *reference])
    mean, std, n = stats([scale * v for v in values])
    if n == 1:  # a single run is shown to four significant digits; its Δ to the same decimals
        digits = max(0, 3 - math.floor(math.log10(abs(mean) or 1)))
    elif std <= 1e-9 * abs(mean):  # identical runs: no spread, three significant digits
        std, digits = 0.0, max(0, 2 - math.floor(math.log10(abs(mean) or 1)))
    else:
        digits = max(0, 1 - math.floor(math.log10(std)))  # two significant digits of the std
    spread = f"{std:.{digits}f}" if std else "0"
    shown = f"{mean:.3g}" if not std and 0 < abs(mean) < 1e-3 else f"{mean:.{digits}f}"
    text = f"{shown} ± {spread} ({n})" if n > 1 else f"{mean:.4g} (1)"
    if not reference:
        return text
    ref_mean = stats([scale * v for v in reference])[0]
    delta = mean - ref_mean
    return text + f", Δ {delta:+.{digits}f}"


def _is_percent(name: str) -> bool:
    """Accuracies, IoUs, average precision and recall: fractions shown in %."""
    return "acc" in name.lower() or "iou" in name.lower() or "AP" in name or "AR" in name


def display_scale(name: str, values: Sequence[float]) -> float:
    """100 for a fraction shown in % (accuracies, IoUs, APs recorded in [0, 1]), else 1: every
    table and figure shows a metric in the same unit."""
    return 100.0 if _is_percent(name) and max(map(abs, values)) <= 1 else 1.0


def grouped_table(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per distinct ``group`` (in the order of the records' ``order``, then first
    appearance), its labels, then each metric as ``mean ± std (n)`` over the group's records
    (e.g. seeds); a metric a group has no record of is ``—``.  Where records are marked
    ``reference`` (a sweep's baseline), the other rows also give the difference to it (untested;
    ``block`` shows a sweep's records as a study report).  Last column: the code versions."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: r.get("order", 0)):
        groups.setdefault(tuple((r.get("group") or {}).items()), []).append(r)
    labels = list(dict.fromkeys(k for key in groups for k, _ in key))
    metrics = list(dict.fromkeys(m for r in records for m in r["metrics"]))

    def values(members: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
        return [r["metrics"][metric] for r in members if r["metrics"].get(metric) is not None]

    rows = [[*labels, *metrics, "code"]]
    for key, members in groups.items():
        named = dict(key)
        cells = []
        for m in metrics:
            mine = values(members, m)
            ref = [] if members[0].get("reference") else values([r for r in records if r.get("reference")], m)  # fmt: skip
            cells.append(mean_std(m, mine, ref) if mine else "—")
        commits = ", ".join(sorted({_commit(r) for r in members}))
        rows.append([*(str(named.get(k, "")) for k in labels), *cells, commits])
    return rows


def is_study(records: Sequence[Mapping[str, Any]]) -> bool:
    """A sweep's records: a baseline (``reference``) and cells tested against it."""
    return any(r.get("reference") for r in records)


def block(records: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown a page shows for ``records``: a study's report (``metamixer.lab.study_text``)
    for a sweep's records, else the table of ``readme_table``."""
    if is_study(records):
        from metamixer.lab.study_text import report

        return report(records)
    return markdown(readme_table(records))


def markdown(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def spec_table(spec: Path, records: Path, root: Path) -> list[list[str]]:
    """A table whose rows a YAML file declares (``rows``: task, paper, config, needs, and ``here``:
    the records of an offline stand-in, matched by modality and experiment); the configs must
    exist under ``root``."""
    import yaml

    rows = [["task", "paper (authors' figure)", "config", "measured here"]]
    for row in yaml.safe_load(spec.read_text())["rows"]:
        if not (root / row["config"]).is_file():
            raise ValueError(f"{spec}: config {row['config']} does not exist")
        here = f"needs {row['needs']}"
        stand_in = row.get("here")
        if stand_in:
            found = [r for r in load_records([records / stand_in["records"]])
                     if (r.get("modality"), r.get("experiment")) == (stand_in["modality"], stand_in["experiment"])]  # fmt: skip
            for r in found:
                metrics = ", ".join(_metric(k, v) for k, v in sorted(r["metrics"].items()))
                here += f"; offline stand-in {stand_in['data']}: {metrics} ({_commit(r)})"
        rows.append([row["task"], row["paper"], f"`{row['config']}`", here])
    return rows


BLOCK = re.compile(r"<!-- results:(\S+) -->\n(.*?)\n?<!-- /results:\1 -->", re.DOTALL)


def update_page(page: Path, records: Path, *, root: Path, check: bool = False) -> list[str]:
    """Regenerate every ``results:NAME`` table of the Markdown file ``page`` from ``records/NAME``
    (configs named by a table's YAML spec are looked up under ``root``, the repository); returns the
    names.  With ``check`` nothing is written and a differing table raises ``ValueError`` naming
    the page, the table and its first differing cell."""
    text = page.read_text()
    names: list[str] = []
    try:
        shown_as = page.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        shown_as = str(page)

    def render(match: re.Match) -> str:
        name = match.group(1)
        spec = records / f"{name}.yaml"
        if spec.is_file():
            rows = spec_table(spec, records, root=root)
        else:
            found = load_records([records / name])
            if not found:
                raise ValueError(f"{shown_as}, table {name!r}: no {RECORD} under {records / name}")
            if is_study(found):
                text = block(found)
                if check:
                    compare_text(text, match.group(2), f"{shown_as}, table {name!r}", records)
                names.append(name)
                return f"<!-- results:{name} -->\n{text}\n<!-- /results:{name} -->"
            rows = readme_table(found)
        if check:
            shown = [
                [c.strip() for c in line.strip().strip("|").split("|")]
                for line in match.group(2).splitlines() if not line.startswith("|---")
            ]  # fmt: skip
            for i, (want, have) in enumerate(itertools.zip_longest(rows, shown), start=0):
                if want != have:
                    column = next((j for j, (a, b) in enumerate(
                        itertools.zip_longest(want or [], have or [])) if a != b), 0)  # fmt: skip
                    label = rows[0][column] if column < len(rows[0]) else column
                    raise ValueError(
                        f"{shown_as}, table {name!r}, row {i}, column {label!r}: the page has "
                        f"{(have or ['(missing)'] * (column + 1))[column]!r}, the records give "
                        f"{(want or ['(nothing)'] * (column + 1))[column]!r}; regenerate with "
                        f"python -m metamixer.lab.results readme README.md {records}"
                    )
        names.append(name)
        return f"<!-- results:{name} -->\n{markdown(rows)}\n<!-- /results:{name} -->"

    new = BLOCK.sub(render, text)
    if not check and new != text:
        page.write_text(new)
    return names


def compare_text(want: str, have: str, where: str, records: Path) -> None:
    """Raise ``ValueError`` naming ``where`` and the first line in which a page's generated text
    (``have``) differs from what the records give (``want``)."""
    wanted, shown = want.splitlines(), have.strip("\n").splitlines()
    for i, (a, b) in enumerate(itertools.zip_longest(wanted, shown), start=1):
        if a != b:
            raise ValueError(
                f"{where}, line {i}: the page has {b if b is not None else '(nothing)'!r}, the "
                f"records give {a if a is not None else '(nothing)'!r}; regenerate with "
                f"python -m metamixer.lab.results readme README.md {records}"
            )


def update_readme(readme: Path, records: Path, *, check: bool = False) -> list[str]:
    """``update_page`` for a README at the repository's root."""
    return update_page(readme, records, root=readme.resolve().parent, check=check)


def pages(readme: Path, docs: Path | None = None) -> list[Path]:
    """The README and every Markdown page under ``docs`` (default: ``docs/`` beside the README,
    if there is one), in a stable order."""
    folder = readme.parent / "docs" if docs is None else docs
    if docs is not None and not docs.is_dir():
        raise ValueError(f"no documentation folder {docs}")
    found = sorted(folder.rglob("*.md")) if folder.is_dir() else []
    return [readme, *found]


def update_docs(
    readme: Path, records: Path, *, docs: Path | None = None, check: bool = False
) -> dict[Path, list[str]]:
    """``update_page`` for the README and every documentation page (``pages``); returns each
    page's table names (pages without tables included)."""
    root = readme.resolve().parent
    return {
        page: update_page(page, records, root=root, check=check) for page in pages(readme, docs)
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    collect = sub.add_parser("collect", help="one table from the records under some folders")
    collect.add_argument("folders", nargs="+")
    collect.add_argument("--out", help="markdown table (default: print)")
    collect.add_argument("--csv", help="also write the table as CSV")
    readme = sub.add_parser(
        "readme", help="regenerate the tables of the README and the docs from committed records"
    )
    readme.add_argument("readme")
    readme.add_argument("records")
    readme.add_argument(
        "--docs", help="the documentation's Markdown folder (default: docs/ beside the README)"
    )
    readme.add_argument(
        "--check", action="store_true", help="fail if a table differs; write nothing"
    )
    args = parser.parse_args(argv)
    if args.command == "readme":
        docs = None if args.docs is None else Path(args.docs)
        try:
            found = update_docs(Path(args.readme), Path(args.records), docs=docs, check=args.check)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        names = [name for page_names in found.values() for name in page_names]
        shown = sum(1 for page_names in found.values() if page_names)
        print(f"{'checked' if args.check else 'wrote'} {len(names)} tables on {shown} pages: "
              f"{', '.join(names)}")  # fmt: skip
        return
    records = load_records([Path(f) for f in args.folders])
    if not records:
        raise SystemExit(f"error: no {RECORD} under {', '.join(args.folders)}")
    header, rows = table(records, code_version().get("commit"))

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    text = markdown([header, *([cell(v) for v in row] for row in rows)]) + "\n"
    if any(row[4].endswith("*") for row in rows):
        text += "\n`*` recorded by another code version than the current one.\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])


if __name__ == "__main__":
    main()
