"""Every deployment pass on and off, our networks against the authors' deployed ones, and against
an older version of this code: one table per workload, measured side by side in one run.

    .venv/bin/python benchmarks/deploy.py                       # the tables of docs/deployment.md
    .venv/bin/python benchmarks/deploy.py --compare-ref db808fc # + a row for that commit's code
    .venv/bin/python benchmarks/deploy.py --records results/records/cpu/deploy  # + records

Workloads (CPU, float32, batch 1 unless stated):

* ``vision``: FFNet-1 at 256², inference, eager and ``onednn`` (trace + freeze run by the oneDNN
  Graph fuser), channels-last;
* ``superres``: FFNet_sr-light ×2 of 256², inference, traced and frozen, channels-last;
* ``timeseries``: one training step (forward, backward, Adam) of the ETT forecaster (7 variables,
  96 → 96, batch 32);
* ``memory``: FFNet_sr-light ×2 of a whole 768² image, peak working memory with and without
  slicing (``inference MB`` above the loaded model).

Each variant runs in its own process (built, deployed, warmed up), and the processes are timed in
turns (``--rounds`` rounds of ``--seconds`` each, one process at a time), so that drift of the
machine's speed hits them alike.  The table gives the median rate, the median ratio to the first
row over rounds and the spread of that ratio (min–max over rounds): a pass earns its place when
dropping it costs more than that spread.  The authors' networks (``authors_deployed.py``) are
loaded with our folded weights and must agree with ours before they are timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from cpu_peak import peak_gmacs
from round_robin import round_robin
from torchscript import torchscript

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

INFERENCE_TRICKS = ["interleave_multiplier_convs", "inplace_activations", "slice_positionwise"]


def variants(workload: str, mode: str, compare_ref: str | None) -> list[dict]:
    """The rows of one table: label + what the worker builds."""
    if workload == "timeseries":
        from metamixer.core import RECIPES

        training = list(RECIPES["cpu_training"])
        rows = [{"label": "all training passes", "skip": []}]
        rows += [{"label": f"without {p}", "skip": [p]} for p in training]
        rows += [{"label": "no passes (as defined)", "skip": training}]
    elif workload == "memory":
        rows = [{"label": "cpu recipe", "skip": []},
                {"label": "without slice_positionwise", "skip": ["slice_positionwise"]}]  # fmt: skip
    else:
        rows = [{"label": "ours, cpu recipe", "skip": []}]
        rows += [{"label": f"ours without {p}", "skip": [p]} for p in INFERENCE_TRICKS]
        rows += [{"label": "ours, fold + channels-last only", "skip": INFERENCE_TRICKS}]
        rows += [{"label": "authors', fold + channels-last", "authors": True}]
    if compare_ref:
        rows.append({"label": f"code at {compare_ref}", "old": True})
    for row in rows:
        row.update(workload=workload, mode=mode)
    return rows


# --- the worker: builds one variant, then times it on request ---------------------------------


def build(spec: dict):
    """Returns ``step()`` running one image (or training step) and its multiply-accumulates."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    workload = spec["workload"]
    if workload == "timeseries":
        return build_training(spec)
    import timm

    import metamixer.superres
    import metamixer.vision  # noqa: F401
    from metamixer.core import build_network, count_macs

    name, task = ("ffnet_1", {}) if workload == "vision" else ("ffnet_sr_light", {"scale": 2})
    size = {"vision": 256, "superres": 256, "memory": 768}[workload]
    net = (build_network(name, task) if task else timm.create_model(name)).eval()
    x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    macs = count_macs(copy.deepcopy(net), x)
    if spec.get("old"):  # that code's deployment: fold + channels-last
        from metamixer.core import reparameterize_model

        model = reparameterize_model(net).to(memory_format=torch.channels_last)
    elif spec.get("authors"):
        from authors_deployed import authors_deployed, copy_parameters

        from metamixer.core import deploy

        ours = deploy(net, "portable")
        model = authors_deployed(name, **task).eval()
        copy_parameters(ours, model)
        model = model.to(memory_format=torch.channels_last)
        small = x[..., :64, :64]  # checked on a small input: no large buffers before timing
        with torch.no_grad():
            gap = (model(small) - ours(small)).abs().max().item()
        if gap > 1e-3:
            raise SystemExit(f"the authors' network differs from ours by {gap}")
    else:
        from metamixer.core import deploy

        model = deploy(net, "cpu", skip=spec.get("skip", []))
    if spec["mode"] in ("jit", "onednn"):
        model = torchscript(model, x, spec["mode"])

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step, macs


def build_training(spec: dict):
    import torch.nn.functional as F

    import metamixer.timeseries  # noqa: F401
    from metamixer.core import build_network

    model = build_network("ffnet_ts", {"num_vars": 7, "seq_len": 96, "horizon": 96})
    if spec.get("old"):
        from metamixer.timeseries.ops import use_fast_dropout

        use_fast_dropout(model)
    else:
        from metamixer.core import RECIPES, apply_passes

        skip = spec.get("skip", [])
        apply_passes(model, [p for p in RECIPES["cpu_training"] if p not in skip])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    history, future = torch.randn(32, 96, 7), torch.randn(32, 96, 7)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(history), future).backward()
        optimizer.step()

    return step, 0


def worker(spec: dict) -> None:
    """Build, warm up, say ``ready <MACs per run>``; then answer ``run S`` with ``runs seconds``
    and ``peak`` with the working memory (MB) of the timed runs above the warmed-up process."""
    from peak_memory import peak_mb, reset_peak

    step, macs = build(spec)
    for _ in range(2):
        step()
    base = reset_peak()
    print("ready", macs, flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < float(command[1]) or n == 0:
                step()
                n += 1
            print(n, elapsed, flush=True)
        elif command[0] == "peak":
            print(peak_mb() - base, flush=True)
        else:
            return


# --- the parent: start the workers, time them in turns, print the tables ----------------------


def checkout(ref: str) -> Path:
    """The packages of ``ref`` in a temporary folder (``git archive``)."""
    folder = Path(tempfile.mkdtemp(prefix="metamixer-ref-"))
    archive = subprocess.run(["git", "archive", ref, "packages"], cwd=ROOT, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def start(spec: dict, old_code: Path | None) -> subprocess.Popen:
    paths = [str(HERE), str(ROOT / "tests")]
    if spec.get("old"):
        paths = [str(p) for p in sorted((old_code / "packages").glob("*/src"))] + paths
    paths.append(os.environ.get("PYTHONPATH", ""))  # e.g. a snapshot's packages, run from it
    env = {"TORCH_CPP_LOG_LEVEL": "ERROR",  # the oneDNN fuser's deprecation notes, every call
           **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}  # fmt: skip
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    answer = proc.stdout.readline().split()
    if not answer or answer[0] != "ready":
        raise SystemExit(f"worker for {spec['label']} failed to start")
    spec["macs"] = float(answer[1])
    return proc


def ask(proc: subprocess.Popen, command: str) -> list[float]:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return [float(v) for v in proc.stdout.readline().split()]


def speed_metrics(values: list[float], base: list[float], unit: str) -> dict[str, float]:
    """Median rate over rounds, and the median, min and max over rounds of its ratio to ``base``
    (the first row's rates in the same rounds)."""
    ratios = [v / b for v, b in zip(values, base, strict=True)]
    return {unit: statistics.median(values), "× first row": statistics.median(ratios),
            "× min": min(ratios), "× max": max(ratios)}  # fmt: skip


def table(rows: list[dict], args: argparse.Namespace, old_code: Path | None) -> list[dict]:
    """Times one table's variants; prints it and returns its rows (``group``, ``metrics``)."""
    from records import print_table  # the parent's code (workers may run an older version)

    workload, mode = rows[0]["workload"], rows[0]["mode"]
    workers = [start(row, old_code) for row in rows]
    rates: list[list[float]] = [[] for _ in rows]
    try:
        for _ in range(1 if workload == "memory" else args.rounds):
            for i, proc in enumerate(workers):
                units, seconds = ask(proc, f"run {args.seconds}")
                rates[i].append(units / seconds)
        peaks = [ask(proc, "peak")[0] for proc in workers] if workload == "memory" else []
    finally:
        for proc in workers:
            proc.stdin.close()
            proc.wait()
    results = []
    if workload == "memory":
        print(f"\n{workload}: FFNet_sr-light ×2, 768² whole image\n")
        for row, mb in zip(rows, peaks, strict=True):
            metrics = {"inference MB": mb, "× cpu recipe": mb / peaks[0]}
            results.append({"group": {"variant": row["label"]}, "metrics": metrics})
    else:
        print(f"\n{workload} ({mode}), {args.rounds} rounds × {args.seconds} s\n")
        unit = "steps/s" if workload == "timeseries" else "img/s"
        peak = peak_gmacs(torch.get_num_threads())
        for row, values in zip(rows, rates, strict=True):
            metrics = speed_metrics(values, rates[0], unit)
            rate = metrics[unit]
            if row["macs"]:
                metrics.update({"GMAC/s": rate * row["macs"] / 1e9,
                                "% of peak": 100 * rate * row["macs"] / 1e9 / peak})  # fmt: skip
            results.append({"group": {"variant": row["label"]}, "metrics": metrics})
    print_table(results)
    return results


def same_process(args: argparse.Namespace) -> list[dict]:
    """FFNet_sr-light ×2 of 256², ours (fold + channels-last) and the authors' rebuild, traced and
    frozen in one process and timed alternately: the two graphs' speed without per-process
    allocator history.  Prints the table and returns its rows (``group``, ``metrics``)."""
    from authors_deployed import authors_deployed, copy_parameters
    from records import print_table

    import metamixer.superres  # noqa: F401  (registers the architectures)
    from metamixer.core import build_network, deploy

    warnings.filterwarnings("ignore")
    x = torch.rand(1, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    ours = deploy(build_network("ffnet_sr_light", {"scale": 2}), "portable")
    theirs = authors_deployed("ffnet_sr_light", scale=2).eval()
    copy_parameters(ours, theirs)
    models = {}
    for name, model in (("ours", ours), ("authors'", theirs)):
        model = model.to(memory_format=torch.channels_last)
        models[name] = torchscript(model, x, "jit")
    graphs = {n: [node.kind() for node in m.graph.nodes()] for n, m in models.items()}
    with torch.inference_mode():
        for model in models.values():
            model(x)
        # seconds=0: one image per network per round, the two in turn
        rates = round_robin({n: partial(m, x) for n, m in models.items()}, args.rounds, 0.0)
    same = graphs["ours"] == graphs["authors'"]
    print(f"\nsuperres in one process, fold + channels-last, jit, {args.rounds} rounds "
          f"timed alternately; same graph: {same}\n")  # fmt: skip
    rows = []
    for name, values in rates.items():
        rows.append({"group": {"network": f"{name}, fold + channels-last"},
                     "metrics": speed_metrics(values, rates["ours"], "img/s"),
                     "same_graph": same})  # fmt: skip
    print_table(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="*", default=["vision", "superres", "timeseries",
                        "memory"])  # fmt: skip
    parser.add_argument("--vision-modes", nargs="+", default=["eager", "onednn"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--compare-ref", help="a git commit whose code gets a row of its own")
    parser.add_argument("--same-process", action="store_true",
                        help="also time ours and the authors' FFNet_sr-light in one process")  # fmt: skip
    parser.add_argument("--records", help="also write each table's rows as records under "
                        "this folder, one subfolder per table")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from cpu_peak import peak_note
    from records import run_name, save_rows

    old_code = checkout(args.compare_ref) if args.compare_ref else None
    print(f"CPU float32, {torch.get_num_threads()} threads; {peak_note(torch.get_num_threads())}")
    run = run_name()
    try:
        for workload in args.workloads:
            modes = {"vision": args.vision_modes, "superres": ["jit"]}.get(workload, ["eager"])
            for mode in modes:
                rows = table(variants(workload, mode, args.compare_ref), args, old_code)
                if args.records:  # runs accumulate: tables show mean ± std over runs
                    save_rows(Path(args.records) / f"{workload}-{mode}", rows, run,
                              rounds=args.rounds, seconds=args.seconds)  # fmt: skip
        if args.same_process:
            rows = same_process(args)
            if args.records:
                save_rows(Path(args.records) / "superres-same-process", rows, run,
                          rounds=args.rounds)  # fmt: skip
    finally:
        if old_code:
            shutil.rmtree(old_code)


if __name__ == "__main__":
    main()
