"""The GPU check: each modality's training step in float32 and mixed precision, the sparse conv
against dense ``conv3d`` and spconv, and inference throughput of the vision and SR peers, on one
device, written to one JSON file and printed as tables.

    scripts/gpu-check                                   # on a GPU machine: installs spconv-cu120
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out runs/gpu_check_cpu.json

``--device cpu --quick`` is the dry run (tiny sizes, bf16 only) that the tests execute.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import metamixer.pointcloud
import metamixer.superres
import metamixer.timeseries
import metamixer.vision  # noqa: F401  (each package registers its architectures)
from metamixer.core import ARCHITECTURES, build_network, deploy

#: one small variant per modality for the training steps
STEP_ARCHS = ("ffnet_test", "ffnet_sr_test", "ffnet_ts_test", "sparse_ffnet_test")
THROUGHPUT = {  # name -> (builder, input resolution)
    "ffnet_1 (fused)": ("ffnet_1", 256),
    "convnext_tiny": ("convnext_tiny", 224),
    "ffnet_sr_light (fused, ×2)": ("ffnet_sr_light", 256),
}


def precisions(device: str) -> list[str]:
    if device == "cpu":
        return ["32-true", "bf16-mixed"]
    out = ["32-true", "16-mixed"]
    return out + (["bf16-mixed"] if torch.cuda.is_bf16_supported() else [])


def training_step(name: str, precision: str, device: str) -> dict:
    torch.manual_seed(0)
    entry = ARCHITECTURES[name]
    net = build_network(name, entry.test_task).to(device).train()
    example = tuple(t.to(device) for t in entry.example(net))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    start = time.perf_counter()
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(*example)
    loss = out.float().square().mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    finite = bool(torch.isfinite(loss)) and all(torch.isfinite(p).all() for p in net.parameters())
    return {
        "arch": name, "precision": precision, "loss": loss.item(), "finite": finite,
        "output_dtype": str(out.dtype), "seconds": time.perf_counter() - start,
    }  # fmt: skip


def sparse_equivalence(device: str) -> dict:
    """Our depthwise sparse conv against dense ``conv3d(groups=C)`` on a random voxel set."""
    from metamixer.pointcloud.sparse import SparseDepthwiseConv, SparseStructure, SparseTensor

    gen = torch.Generator().manual_seed(0)
    size, c, k = 12, 8, 3
    coords = torch.unique(torch.randint(0, size, (600, 3), generator=gen), dim=0)
    batch = torch.zeros(len(coords), dtype=torch.long)
    structure = SparseStructure(coords.to(device), batch.to(device), 1)
    conv = SparseDepthwiseConv(c, k).to(device).double()
    x = torch.randn(len(coords), c, dtype=torch.float64, generator=gen).to(device)
    grid = x.new_zeros(1, c, size, size, size)
    grid[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = x.t()
    dense = F.conv3d(grid, conv.weight, conv.bias, padding=k // 2, groups=c)
    ref = dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]].t()
    with torch.no_grad():
        diff = float((conv(SparseTensor(x, structure)).features - ref).abs().max())
    return {"max_abs_diff": diff, "ok": diff < 1e-9}


def throughput(name: str, device: str, batch: int, seconds: float, quick: bool) -> dict:
    arch, res = THROUGHPUT[name]
    if quick:
        res = 64
    if arch.startswith("ffnet_sr"):
        net, shape = build_network(arch, {"scale": 2}), (batch, 3, res // 2, res // 2)
    elif arch in ARCHITECTURES:
        net, shape = build_network(arch, {"num_classes": 1000, "in_chans": 3}), (batch, 3, res, res)
    else:
        import timm

        net, shape = timm.create_model(arch), (batch, 3, res, res)
    net = deploy(net.to(device), "cuda" if device == "cuda" else "cpu")
    x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.inference_mode(), torch.autocast(device, dtype=dtype):
        net(x)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net(x)
            done += batch
        if device == "cuda":
            torch.cuda.synchronize()
    return {"model": name, "resolution": res, "batch": batch, "dtype": str(dtype),
            "images_per_s": done / (time.perf_counter() - start)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", default="runs/gpu_check.json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --device cpu for the dry run")
    batch, seconds = (2, 0.2) if args.quick else (args.batch, args.seconds)
    result = {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "training_steps": [
            training_step(a, p, args.device) for a in STEP_ARCHS for p in precisions(args.device)
        ],
        "sparse_equivalence": sparse_equivalence(args.device),
        "throughput": [throughput(n, args.device, batch, seconds, args.quick) for n in THROUGHPUT],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['device']}, torch {result['torch']}\n")
    print("| arch | precision | finite | output dtype | s |\n|---|---|---|---|---|")
    for r in result["training_steps"]:
        print(f"| {r['arch']} | {r['precision']} | {r['finite']} | {r['output_dtype']} | "
              f"{r['seconds']:.3f} |")  # fmt: skip
    print(
        f"\nsparse depthwise vs dense conv3d: max |diff| {result['sparse_equivalence']['max_abs_diff']:.1e}\n"
    )
    base = result["throughput"][0]["images_per_s"]
    print("| model | res | batch | images/s | × ffnet_1 |\n|---|---|---|---|---|")
    for r in result["throughput"]:
        print(f"| {r['model']} | {r['resolution']} | {r['batch']} | {r['images_per_s']:.1f} | "
              f"{r['images_per_s'] / base:.2f} |")  # fmt: skip
    failed = [r for r in result["training_steps"] if not r["finite"]]
    if failed or not result["sparse_equivalence"]["ok"]:
        raise SystemExit(f"error: failed checks: {failed or result['sparse_equivalence']}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
