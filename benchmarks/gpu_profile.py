"""Where FFNet-1's GPU time goes, and the candidates that might make it faster than ConvNeXt-T.

    scripts/gpu-check                                           # runs this after gpu_check.py
    .venv/bin/python benchmarks/gpu_profile.py --device cpu --quick --records /tmp/p   # dry run

1. **Profile** (``torch.profiler``): fused FFNet-1 and ConvNeXt-T, bf16 autocast, channels-last,
   eager; every leaf module is annotated with its operator class (depthwise conv k×k, pointwise
   conv, dense conv, GELU, norm, linear, …), and the device time (CPU time on the CPU) under each
   class is summed; what no module covers (residual adds, layer-scale products, layout copies)
   is ``outside modules``.  Compiled, the kernels are classed by name (Inductor's fused
   pointwise / reduction kernels, templates, convolution and GEMM kernels).
2. **Candidates**, timed round-robin in one process against ConvNeXt-T compiled (the target:
   FFNet-1 ≥ ConvNeXt-T img/s, compiled, bf16, batch 64): layouts (channels-last vs NCHW),
   cuDNN's algorithm search (``cudnn.benchmark``), Inductor's default, ``max-autotune`` (conv /
   matmul algorithm choice by benchmarking, Triton templates) and coordinate-descent tuning.
   Every candidate is a setting of this script, none is part of the model definition.

Records: ``<records>/profile`` (one per network, mode and operator class) and
``<records>/candidates`` (one per candidate).  Not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import timm
import torch
from records import print_table, run_name, save_rows
from round_robin import median_ratio, round_robin
from torch import nn

import metamixer.vision  # noqa: F401  (registers FFNet)
from metamixer.core import deploy


def operator_class(module: nn.Module) -> str | None:
    """The class a leaf module's time is counted under (None: not a leaf of interest)."""
    if isinstance(module, nn.Conv2d):
        k = "×".join(map(str, module.kernel_size))
        if module.groups == 1:
            return "pointwise conv" if k == "1×1" else f"dense conv {k}"
        if module.groups == module.in_channels:
            multiplier = module.out_channels // module.in_channels
            return f"depthwise conv {k}" + (f" (×{multiplier} channels)" if multiplier > 1 else "")
        return f"grouped conv {k}"
    if isinstance(module, nn.GELU):
        return "GELU"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
        return "norm"
    if not list(module.children()) and type(module).__name__ not in ("Identity", "Dropout"):
        return type(module).__name__
    return None


@contextlib.contextmanager
def annotated(model: nn.Module) -> Iterator[None]:
    """Each classed leaf module's forward runs inside ``record_function("op:<class>")``."""
    handles, open_ranges = [], []

    def enter(name: str, *_: object) -> None:
        scope = torch.profiler.record_function(f"op:{name}")
        scope.__enter__()
        open_ranges.append(scope)

    def leave(*_: object) -> None:
        open_ranges.pop().__exit__(None, None, None)

    for module in model.modules():
        name = operator_class(module)
        if name is not None:
            handles.append(module.register_forward_pre_hook(partial(enter, name)))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def kernel_class(name: str) -> str:
    """Inductor / cuDNN / ATen kernel names, classed (compiled profiles)."""
    low = name.lower()
    for key, label in (("triton_poi", "fused pointwise (Inductor)"),
                       ("triton_red", "fused reduction (Inductor)"),
                       ("triton_per", "fused reduction (Inductor)"),
                       ("triton_tem", "template conv / matmul (Inductor)"),
                       ("cpp_fused", "fused pointwise / reduction (Inductor, CPU)"),
                       ("depthwise", "depthwise conv kernel"), ("dgrad", "conv kernel"),
                       ("conv", "conv kernel"), ("implicit", "conv kernel"),
                       ("xmma", "conv / GEMM kernel (cuDNN)"), ("gemm", "GEMM kernel"),
                       ("cutlass", "GEMM kernel"), ("sm90", "conv / GEMM kernel (cuDNN)"),
                       ("copy", "copies"), ("layout", "copies")):  # fmt: skip
        if key in low:
            return label
    return "other"


def profile(
    label: str, model: Callable, x: torch.Tensor, mode: str, device: str
) -> list[dict[str, object]]:
    """One record per operator class: its share of the device (CPU) time of a few calls."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    annotate = isinstance(model, nn.Module) and mode == "eager"
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
        for _ in range(2):
            model(x)
        context = annotated(model) if annotate else contextlib.nullcontext()
        with context, torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                model(x)
            if device == "cuda":
                torch.cuda.synchronize()
    times: dict[str, float] = {}
    events = prof.key_averages()
    if annotate:
        total_key = "device_time_total" if device == "cuda" else "cpu_time_total"
        for event in events:
            if event.key.startswith("op:"):
                times[event.key[3:]] = times.get(event.key[3:], 0.0) + getattr(event, total_key)
        self_key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        whole = sum(getattr(e, self_key) for e in events if not e.key.startswith("op:"))
        times["outside modules"] = max(0.0, whole - sum(times.values()))
    else:
        self_key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        for event in events:
            if getattr(event, self_key) > 0:
                name = kernel_class(event.key)
                times[name] = times.get(name, 0.0) + getattr(event, self_key)
    whole = sum(times.values()) or 1.0
    return [{"group": {"network": label, "mode": mode, "operator class": name},
             "metrics": {"ms per call": t / 3 / 1000, "% of time": 100 * t / whole}}
            for name, t in sorted(times.items(), key=lambda kv: -kv[1])]  # fmt: skip


def compiled(model: nn.Module, settings: dict[str, object], mode: str | None) -> Callable:
    import torch._inductor.config as inductor

    for key, value in settings.items():
        setattr(inductor, key, value)
    return torch.compile(model, mode=mode)


#: candidate -> (network, channels-last, cudnn.benchmark, compile mode or None for eager,
#: Inductor settings)
CANDIDATES: dict[str, tuple[str, bool, bool, str | None, dict[str, object]]] = {
    "convnext_tiny, compiled (the target)": ("convnext_tiny", True, False, "default", {}),
    "ffnet_1 fused, eager": ("ffnet_1", True, False, None, {}),
    "ffnet_1 fused, eager, NCHW": ("ffnet_1", False, False, None, {}),
    "ffnet_1 fused, eager, cudnn.benchmark": ("ffnet_1", True, True, None, {}),
    "ffnet_1 fused, compiled": ("ffnet_1", True, False, "default", {}),
    "ffnet_1 fused, compiled, NCHW": ("ffnet_1", False, False, "default", {}),
    "ffnet_1 fused, compiled, cudnn.benchmark": ("ffnet_1", True, True, "default", {}),
    "ffnet_1 fused, compiled, coordinate descent": ("ffnet_1", True, False, "default",
                                                    {"coordinate_descent_tuning": True}),
    "ffnet_1 fused, compiled, max-autotune": ("ffnet_1", True, True, "max-autotune-no-cudagraphs",
                                              {}),
}  # fmt: skip


def network(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=1000).eval()
    return deploy(model, "portable") if arch.startswith("ffnet") else model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--res", type=int, default=None, help="default: 256 (64 with --quick)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                        default=list(CANDIDATES))  # fmt: skip
    parser.add_argument("--records", default="results/records/gpu-check",
                        help="records go to FOLDER/profile and FOLDER/candidates")  # fmt: skip
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --device cpu for the dry run")
    if args.quick:
        args.batch, args.rounds, args.seconds = 2, 1, 0.05
        args.candidates = [c for c in args.candidates if "max-autotune" not in c]  # minutes
    res = args.res or (64 if args.quick else 256)
    device, run = args.device, run_name()
    x = torch.randn(args.batch, 3, res, res, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    profiles: list[dict[str, object]] = []
    for label, arch in (("ffnet_1 fused", "ffnet_1"), ("convnext_tiny", "convnext_tiny")):
        model = network(arch).to(device).to(memory_format=torch.channels_last)
        xl = x.contiguous(memory_format=torch.channels_last)
        profiles += profile(label, model, xl, "eager", device)
        profiles += profile(label, compiled(model, {}, None), xl, "compiled", device)
        torch._dynamo.reset()
    print_table(profiles)
    runners, prepare = {}, {}
    for name in args.candidates:
        arch, channels_last, benchmark, mode, settings = CANDIDATES[name]
        torch.backends.cudnn.benchmark = benchmark
        model = network(arch).to(device)
        xin = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            xin = x.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        runner = model if mode is None else compiled(model, settings, None if mode == "default"
                                                     else mode)  # fmt: skip
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            for _ in range(2):
                runner(xin)
        prepare[name] = time.perf_counter() - start

        def call(
            runner: Callable = runner, xin: torch.Tensor = xin, bench: bool = benchmark
        ) -> None:
            torch.backends.cudnn.benchmark = bench
            with torch.autocast(device, dtype=torch.bfloat16):
                runner(xin)

        runners[name] = call
    with torch.inference_mode():
        calls = round_robin(runners, args.rounds, args.seconds, sync)
    base = next(iter(calls))
    rows = []
    for order, (name, values) in enumerate(calls.items()):
        rates = [c * args.batch for c in values]
        rows.append({"group": {"candidate": name},
                     "metrics": {"img/s": statistics.median(rates),
                                 "× convnext_tiny compiled": median_ratio(values, calls[base]),
                                 "warm-up s": prepare[name]},
                     "order": order, "batch": args.batch, "resolution": res,
                     "dtype": "bfloat16", "device": device})  # fmt: skip
    print_table(rows)
    out = Path(args.records)
    save_rows(out / "profile", profiles, run, device=device, batch=args.batch, resolution=res)
    save_rows(out / "candidates", rows, run)
    print(f"\nwrote the records under {out}")


if __name__ == "__main__":
    main()
