"""CPU inference throughput of FFNet vs timm peers, measured side by side in one run.

    .venv/bin/python benchmarks/vision.py                # the README table (batch 1 and 32)
    .venv/bin/python benchmarks/vision.py --quick        # fewer iterations

Every model runs in float32, channels-last, under ``torch.inference_mode``, at its native resolution,
in its deployment form: FFNet and FastViT re-parameterized. ``--freeze`` (default on) traces each model
with ``torch.jit`` and freezes it (constant-folds weights, fuses conv + bias/add/ReLU for oneDNN);
``--no-freeze`` measures eager mode. Images/s is the median of timed repetitions, each at least
``--min_time`` seconds; the ratio column is relative to fused FFNet-1.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from timm.utils.model import reparameterize_model as timm_reparameterize

import metamixer.vision  # noqa: F401  (registers FFNet)
from metamixer.core import count_macs, count_params, reparameterize_model

# name, timm model, resolution, fused
MODELS = [
    ("ffnet_1 (fused)", "ffnet_1", 256, True),
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


def build(arch: str, fused: bool) -> torch.nn.Module:
    model = timm.create_model(arch, num_classes=1000).eval()
    if fused:
        model = (
            reparameterize_model(model) if arch.startswith("ffnet") else timm_reparameterize(model)
        )
    return model.to(memory_format=torch.channels_last)


def prepare(model: torch.nn.Module, x: torch.Tensor, freeze: bool) -> torch.nn.Module:
    if not freeze:
        return model
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def images_per_second(model, x: torch.Tensor, min_time: float, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):  # warm-up (and oneDNN kernel selection)
            model(x)
        rates = []
        for _ in range(repeats):
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < min_time:
                model(x)
                n += 1
            rates.append(n * x.shape[0] / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--min_time", type=float, default=2.0, help="seconds per repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="min_time 0.5, 3 repeats")
    parser.add_argument("--models", nargs="+", help="subset of names (default: all)")
    args = parser.parse_args()
    if args.quick:
        args.min_time, args.repeats = 0.5, 3
    torch.manual_seed(0)
    rows = []
    for name, arch, res, fused in MODELS:
        if args.models and name not in args.models and arch not in args.models:
            continue
        model = build(arch, fused)
        probe = torch.randn(1, 3, res, res)
        macs = count_macs(copy.deepcopy(model), probe) / 1e9
        row = {"name": name, "res": res, "params": count_params(model) / 1e6, "gmacs": macs}
        for b in args.batch:
            x = torch.randn(b, 3, res, res).contiguous(memory_format=torch.channels_last)
            runner = prepare(model, x, args.freeze)
            row[b] = images_per_second(runner, x, args.min_time, args.repeats)
            print(f"  {name:22s} batch {b:3d}: {row[b]:8.1f} img/s", flush=True)
        rows.append(row)
    base = next((r for r in rows if r["name"] == "ffnet_1 (fused)"), rows[0])
    mode = "jit-frozen" if args.freeze else "eager"
    print(f"\nCPU inference, float32, channels-last, {mode}, {torch.get_num_threads()} threads\n")
    header = "| model | res | params (M) | GMACs |"
    header += "".join(f" img/s @{b} | ratio @{b} |" for b in args.batch)
    print(header)
    print("|" + "---|" * (4 + 2 * len(args.batch)))
    for r in rows:
        cells = "".join(f" {r[b]:.1f} | {r[b] / base[b]:.2f} |" for b in args.batch)
        print(f"| {r['name']} | {r['res']} | {r['params']:.2f} | {r['gmacs']:.2f} |{cells}")


if __name__ == "__main__":
    main()
