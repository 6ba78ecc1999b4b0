"""CPU inference throughput of FFNet vs timm peers, measured side by side in one run.

    .venv/bin/python benchmarks/vision.py                        # the table of docs/vision.md
    .venv/bin/python benchmarks/vision.py --modes jit --batch 1  # one column only

Every model runs in float32, channels-last, under ``torch.inference_mode``, at its native
resolution, in its deployment form (FFNet through ``metamixer.core.deploy(model, "cpu")``, FastViT
re-parameterized by timm, the authors' FFNet-1 folded by their rules: ``authors_deployed.py``), in
each requested mode:

* ``eager``: plain PyTorch;
* ``jit``: ``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference`` (oneDNN conv fusion);
* ``onednn``: ``torch.jit.trace`` + ``freeze`` run by the oneDNN Graph fuser (convs and matmuls
  fused with their GELU / add / scale neighbours);
* ``compile``: ``torch.compile`` (Inductor) with weight freezing; the seconds its first two calls
  take (compilation included) are recorded as ``compile @B s``.

The last columns give each model's best mode (ratio: best to FFNet-1's best), the GMAC/s that
best mode achieves and its share of this CPU's peak (``cpu_peak.py``); ``--records`` writes each
row as a result record.

The models are timed round-robin (``--rounds`` rounds of ``--seconds`` each), so that drift of
the machine's speed hits all of them alike; images/s is the median over rounds and the ratio is
the median of the per-round ratios to fused FFNet-1 in the same mode.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from functools import partial
from pathlib import Path

import timm
import torch
from authors_deployed import authors_deployed, copy_parameters
from cpu_peak import peak_gmacs, peak_note
from records import print_table, run_name, save_rows
from round_robin import median_ratio, round_robin
from timm.utils.model import reparameterize_model as timm_reparameterize
from torchscript import torchscript

import metamixer.vision  # noqa: F401  (registers FFNet)
from metamixer.core import count_macs, count_params, deploy

# name, timm model, resolution, deployment-fused ("authors": their deployed architecture)
MODELS = [
    ("ffnet_1 (fused)", "ffnet_1", 256, True),
    ("ffnet_1 authors' (fused)", "ffnet_1", 256, "authors"),
    ("ffnet_1", "ffnet_1", 256, False),
    ("ffnet_2 (fused)", "ffnet_2", 256, True),
    ("ffnet_2", "ffnet_2", 256, False),
    ("convnext_tiny", "convnext_tiny", 224, False),
    ("convnext_nano", "convnext_nano", 224, False),
    ("fastvit_sa12 (fused)", "fastvit_sa12", 256, True),
    ("poolformerv2_s24", "poolformerv2_s24", 224, False),
    ("efficientformer_l1", "efficientformer_l1", 224, False),
    ("resnet50", "resnet50", 224, False),
]
BASE = "ffnet_1 (fused)"


def build(arch: str, fused: bool | str) -> torch.nn.Module:
    model = timm.create_model(arch, num_classes=1000).eval()
    if fused == "authors":
        theirs = authors_deployed(arch).eval()
        copy_parameters(deploy(model, "portable"), theirs)
        model = theirs
    elif fused and arch.startswith("ffnet"):
        return deploy(model, "cpu")  # folds, CPU passes, channels-last
    elif fused:
        model = timm_reparameterize(model)
    return model.to(memory_format=torch.channels_last)


def run_in_mode(model: torch.nn.Module, x: torch.Tensor, mode: str):
    with torch.no_grad():
        if mode in ("jit", "onednn"):
            return torchscript(model, x, mode)
        if mode == "compile":
            import torch._inductor.config as inductor

            inductor.freezing = True
            return torch.compile(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modes", nargs="+", default=["eager", "jit", "onednn", "compile"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per model per round")
    parser.add_argument("--models", nargs="+", help="subset of names (default: all)")
    parser.add_argument("--records", help="also write each row as a record under this folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.manual_seed(0)
    chosen = [m for m in MODELS if not args.models or m[0] in args.models or m[1] in args.models]
    info, rates, ratios, compile_s = {}, {}, {}, {}
    models = {name: build(arch, fused) for name, arch, _, fused in chosen}
    for name, _, res, _ in chosen:
        probe = torch.randn(1, 3, res, res)
        info[name] = (
            res,
            count_params(models[name]) / 1e6,
            count_macs(copy.deepcopy(models[name]), probe) / 1e9,
        )
    for mode in args.modes:
        for b in args.batch:
            runners = {}
            for name, _, res, _ in chosen:
                x = torch.randn(b, 3, res, res).contiguous(memory_format=torch.channels_last)
                try:
                    start = time.perf_counter()
                    runner = run_in_mode(models[name], x, mode)
                    with torch.inference_mode():
                        for _ in range(2):  # warm-up, compilation, oneDNN kernel selection
                            runner(x)
                    if mode == "compile":
                        compile_s[name, b] = time.perf_counter() - start
                except RuntimeError as error:  # e.g. an op the oneDNN Graph fuser rejects
                    print(
                        f"  {mode:7s} batch {b:3d} {name:22s} fails: {str(error).splitlines()[0]}",
                        flush=True,
                    )
                    continue
                runners[name] = (runner, x)
            with torch.inference_mode():
                calls = round_robin(
                    {k: partial(r, x) for k, (r, x) in runners.items()}, args.rounds, args.seconds
                )
            per_round = {name: [c * b for c in values] for name, values in calls.items()}
            base = per_round.get(BASE, next(iter(per_round.values())))
            for name, values in per_round.items():
                rates[name, mode, b] = statistics.median(values)
                ratios[name, mode, b] = median_ratio(values, base)
                print(
                    f"  {mode:7s} batch {b:3d} {name:22s} {rates[name, mode, b]:8.1f} img/s",
                    flush=True,
                )
    threads = torch.get_num_threads()
    best = {(name, b): max(rates.get((name, m, b), 0.0) for m in args.modes)
            for name in info for b in args.batch}  # fmt: skip
    rows = []
    for name, (res, params, gmacs) in info.items():
        metrics: dict[str, float] = {}
        for m in args.modes:
            for b in args.batch:
                if (name, m, b) in rates:  # absent: the mode failed for this model
                    metrics[f"{m} @{b} img/s"] = rates[name, m, b]
                    metrics[f"{m} @{b} ×"] = ratios[name, m, b]
                if m == "compile" and (name, b) in compile_s:
                    metrics[f"compile @{b} s"] = compile_s[name, b]
        for b in args.batch:
            metrics[f"best @{b} img/s"] = best[name, b]
            metrics[f"best @{b} ×"] = best[name, b] / best[BASE, b]
            metrics[f"best @{b} GMAC/s"] = best[name, b] * gmacs
            metrics[f"best @{b} % of peak"] = 100 * best[name, b] * gmacs / peak_gmacs(threads)
        group = {"model": name, "res": res, "params (M)": f"{params:.2f}", "GMACs": f"{gmacs:.2f}"}
        rows.append({"group": group, "metrics": metrics})
    print(
        f"\nCPU inference, float32, channels-last, {threads} threads ({peak_note(threads)}); "
        f"img/s and × = its median per-round ratio to {BASE} in the same mode\n"
    )
    print_table(rows)
    if args.records:  # runs accumulate: tables show mean ± std over runs
        save_rows(Path(args.records), rows, run_name(), rounds=args.rounds, seconds=args.seconds)


if __name__ == "__main__":
    main()
