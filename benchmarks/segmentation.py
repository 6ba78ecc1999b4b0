"""CPU inference of the segmentation networks, 512×512, batch 1, measured side by side in one run.

    .venv/bin/python benchmarks/segmentation.py            # the table of docs/dense-prediction.md
    .venv/bin/python benchmarks/segmentation.py --modes jit

Each network is built with 150 classes (ADE20K), put in its deployment form (FFNet backbones and
FFNet-seg re-parameterized; ConvNeXt has nothing to fold), float32, channels-last, and run in each
mode of ``benchmarks/vision.py`` (``eager``; ``jit`` = traced, frozen, optimized for inference).
The networks are timed round-robin (``--rounds`` × ``--seconds``); images/s is the median over
rounds and the ratio the median per-round ratio to UperNet on ConvNeXt-T in the same mode.
Untrained weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings
from functools import partial
from pathlib import Path

import torch
from records import print_table, run_name, save_rows
from round_robin import median_ratio, round_robin
from vision import run_in_mode  # the deployment modes of the classification benchmark

import metamixer.vision  # noqa: F401  (registers the architectures)
from metamixer.core import build_network, count_macs, count_params, deploy

# name, architecture, re-parameterized
MODELS = [
    ("UperNet ConvNeXt-T", "upernet_convnext_tiny", False),
    ("UperNet FFNet-2 (fused)", "upernet_ffnet_2", True),
    ("UperNet FFNet-2", "upernet_ffnet_2", False),
    ("FPN FFNet-2 (fused)", "fpn_ffnet_2", True),
    ("FFNet-seg (fused)", "ffnet_seg", True),
]
BASE = "UperNet ConvNeXt-T"


def build(arch: str, fused: bool) -> torch.nn.Module:
    net = build_network(arch, {"num_classes": 150, "in_chans": 3}).eval()
    if fused:
        return deploy(net, "cpu")  # folds, CPU passes, channels-last
    return net.to(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--modes", nargs="+", default=["eager", "jit"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per model per round")
    parser.add_argument("--records", help="also write each row as a record under this folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    nets = {name: build(arch, fused) for name, arch, fused in MODELS}
    info = {
        name: (count_params(net) / 1e6, count_macs(copy.deepcopy(net), x) / 1e9)
        for name, net in nets.items()
    }
    rates, ratios = {}, {}
    for mode in args.modes:
        runners = {}
        for name, net in nets.items():
            runner = run_in_mode(net, x, mode)
            with torch.inference_mode():
                for _ in range(2):  # warm-up
                    runner(x)
            runners[name] = runner
        with torch.inference_mode():
            per_round = round_robin(
                {k: partial(r, x) for k, r in runners.items()}, args.rounds, args.seconds
            )
        for name, values in per_round.items():
            rates[name, mode] = statistics.median(values)
            ratios[name, mode] = median_ratio(values, per_round[BASE])
            print(f"  {mode:6s} {name:26s} {rates[name, mode]:6.2f} img/s", flush=True)
    rows = []
    for name, (params, gmacs) in info.items():
        metrics = {}
        for m in args.modes:
            metrics[f"{m} img/s"], metrics[f"{m} ×"] = rates[name, m], ratios[name, m]
        group = {"network": name, "params (M)": f"{params:.1f}", "GMACs": f"{gmacs:.1f}"}
        rows.append({"group": group, "metrics": metrics})
    print(
        f"\nCPU inference, {args.size}×{args.size}, batch 1, float32, channels-last, "
        f"{torch.get_num_threads()} threads, 150 classes; img/s and × = ratio to {BASE}\n"
    )
    print_table(rows)
    if args.records:  # runs accumulate: tables show mean ± std over runs
        save_rows(Path(args.records), rows, run_name(), size=args.size, rounds=args.rounds,
                  seconds=args.seconds)  # fmt: skip


if __name__ == "__main__":
    main()
