"""Sparse depthwise conv vs spconv's full SubMConv3d, and whole-network throughput, side by side.

    .venv/bin/python benchmarks/pointcloud.py                  # CPU table (docs/pointcloud.md)
    python benchmarks/pointcloud.py --device cuda              # on a GPU machine (spconv-cu120)

The voxel set is surface-like (a room: floor, four walls, boxes on the floor), ~100k active voxels
with ~9 neighbours each in a 3³ window, as real indoor scans have.  Per channel count C it times
forward and forward+backward of

* ``spconv SubMConv3d``: spconv's full C → C submanifold conv (what the authors use);
* ``depthwise (ours, native)``: our depthwise conv (reused gather buffer, in-place multiply,
  ``index_add_`` per offset; the backward shares each gathered block between the two gradients);
* ``depthwise (ours, torch-scatter)``: the same with torch-scatter's ``scatter_add``;
* ``depthwise (naive)``: the textbook per-offset gather → multiply → out-of-place scatter-add,
  autograd for the backward.

Then whole ``SparseFFNet`` inference (fused, eval) on a 100k-point scene: points/s and peak memory
(high-water mark of the timed runs above the loaded model and input, each model in its own
process) for the depthwise and the full-conv model.  Times are medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from peak_memory import peak_mb, reset_peak
from records import print_table, run_name, save_rows

import metamixer.pointcloud  # noqa: F401  (registers the architectures)
from metamixer.core import build_network, reparameterize_model
from metamixer.pointcloud._spconv import spconv
from metamixer.pointcloud.sparse import (
    SparseDepthwiseConv,
    SparseStructure,
    SparseTensor,
    sparse_depthwise,
)

try:
    import torch_scatter
except ImportError:  # pragma: no cover
    torch_scatter = None


def room(target: int = 100_000, device: str = "cpu") -> SparseStructure:
    """Voxel surfaces of a room: floor, walls and boxes (1 voxel thick)."""
    side = int((target / 2.2) ** 0.5)
    height = side // 4
    a = torch.arange(side)
    h = torch.arange(height)
    parts = [torch.stack(torch.meshgrid(a, a, torch.zeros(1, dtype=torch.long), indexing="ij"), -1)]
    for fixed in (0, side - 1):
        parts.append(torch.stack(torch.meshgrid(torch.tensor([fixed]), a, h, indexing="ij"), -1))
        parts.append(torch.stack(torch.meshgrid(a, torch.tensor([fixed]), h, indexing="ij"), -1))
    gen = torch.Generator().manual_seed(0)
    while sum(p.numel() // 3 for p in parts) < target:
        x0, y0 = torch.randint(5, side - 30, (2,), generator=gen).tolist()
        s = int(torch.randint(8, 25, (1,), generator=gen))
        b = torch.arange(s)
        top = torch.stack(torch.meshgrid(b + x0, b + y0, torch.tensor([s]), indexing="ij"), -1)
        wall = torch.stack(torch.meshgrid(b + x0, torch.tensor([y0]), b, indexing="ij"), -1)
        parts += [top, wall]
    coords = torch.unique(torch.cat([p.reshape(-1, 3) for p in parts]), dim=0)[:target]
    return SparseStructure(
        coords.to(device), torch.zeros(len(coords), dtype=torch.long, device=device), 1
    )


def timed(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_depthwise(x, weight, pairs):
    """gather -> multiply -> scatter-add per offset, out of place, autograd backward."""
    out = x.new_zeros(x.shape)
    for k, (dst, src) in enumerate(pairs):
        out = out.index_add(0, dst, x.index_select(0, src) * weight[k])
    return out


def spconv_features(conv, tensor):
    return conv(tensor).features


def ours_features(conv, x, structure):
    return conv(SparseTensor(x, structure)).features


def conv_table(structure: SparseStructure, channels: list[int], repeats: int, device: str) -> list:
    pairs = structure.pairs(3)
    rows = []
    for c in channels:
        x = torch.randn(structure.num_voxels, c, device=device, requires_grad=True)
        ours = SparseDepthwiseConv(c, 3, bias=False).to(device)
        full = spconv.SubMConv3d(c, c, 3, padding=1, bias=False, indice_key="bench").to(device)
        tensor = spconv.SparseConvTensor(
            x,
            structure.spconv_indices(),
            structure.spatial_shape,
            1,
            indice_dict=structure.indice_dict,
        )
        weight = torch.randn(27, c, device=device, requires_grad=True)

        def run(fn, backward):
            def step():
                out = fn()
                if backward:
                    out.sum().backward()

            return step

        impls = {
            "spconv SubMConv3d (full C→C)": partial(spconv_features, full, tensor),
            "depthwise (ours, native)": partial(ours_features, ours, x, structure),
            "depthwise (naive)": partial(naive_depthwise, x, weight, pairs),
        }
        if torch_scatter is not None:
            impls["depthwise (ours, torch-scatter)"] = partial(
                sparse_depthwise, x, weight, pairs, None, "torch_scatter"
            )
        ref = None  # spconv's full conv (timed first) is the reference
        for name, fn in impls.items():
            with torch.no_grad():
                fwd = timed(run(fn, False), repeats, device)
            both = timed(run(fn, True), repeats, device)
            ref = ref or both
            rows.append({"group": {"C": c, "conv": name}, "metrics": {
                "forward ms": fwd * 1000, "fwd+bwd ms": both * 1000, "fwd+bwd × spconv": ref / both,
            }})  # fmt: skip
            print(
                f"  C={c:3d} {name:36s} fwd {fwd * 1000:8.1f} ms  fwd+bwd {both * 1000:8.1f} ms",
                flush=True,
            )
    return rows


def network_row(full: bool, voxels: int, repeats: int, device: str) -> dict:
    """One network's inference throughput and peak memory (run in its own process)."""
    structure = room(voxels, device)
    feats = torch.randn(structure.num_voxels, 6, device=device)
    arch = "sparse_ffnet_full" if full else "sparse_ffnet"
    net = build_network(arch, {"in_channels": 6, "num_classes": 20})
    model = reparameterize_model(net.to(device).eval())
    with torch.inference_mode():
        model(feats, structure.coords, structure.batch)  # warm-up
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = reset_peak() * 2**20
        seconds = timed(partial(model, feats, structure.coords, structure.batch), repeats, device)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_mb() * 2**20
    peak = (peak - base) / 2**20  # activations and workspace above the loaded model and input
    name = "SparseFFNet, full convs (authors)" if full else "SparseFFNet, depthwise (ours)"
    params = sum(p.numel() for p in model.parameters())
    return {"name": name, "params": params, "pps": structure.num_voxels / seconds, "peak": peak}


def network_table(voxels: int, repeats: int, device: str) -> list:
    rows = []
    for full in (False, True):
        cmd = [sys.executable, __file__, "--network", str(int(full)), "--voxels", str(voxels),
               "--repeats", str(repeats), "--device", device]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append({"group": {"network": row["name"], "params (M)": round(row["params"] / 1e6, 1)},
                     "metrics": {"points/s": row["pps"], "peak MB": row["peak"]}})  # fmt: skip
        print(f"  {row['name']}: {row['pps']:,.0f} points/s, peak {row['peak']:.0f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--voxels", type=int, default=100_000)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--records", help="also write each row as a record under this folder "
                        "(convs/, networks/)")  # fmt: skip
    parser.add_argument("--network", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.network is not None:
        print(json.dumps(network_row(bool(args.network), args.voxels, args.repeats, args.device)))
        return
    structure = room(args.voxels, args.device)
    table = structure.neighbours(3)
    mean_neighbours = (table < structure.num_voxels).sum(0).float().mean()
    print(
        f"{structure.num_voxels:,} voxels, {mean_neighbours:.1f} neighbours per voxel (3³ window)"
    )
    convs = conv_table(structure, args.channels, args.repeats, args.device)
    nets = network_table(args.voxels, max(2, args.repeats // 2), args.device)
    threads = torch.get_num_threads() if args.device == "cpu" else torch.cuda.get_device_name()
    print(
        f"\nSparse 3³ submanifold convs on {structure.num_voxels:,} surface voxels "
        f"({mean_neighbours:.1f} neighbours each), {args.device} ({threads}), median of {args.repeats}\n"
    )
    print_table(convs)
    print(f"\nnetworks (fused, inference, median of {max(2, args.repeats // 2)}):\n")
    print_table(nets)
    if args.records:  # runs accumulate: tables show mean ± std over runs
        setup = {"device": args.device, "voxels": structure.num_voxels, "repeats": args.repeats}
        run = run_name()
        save_rows(Path(args.records) / "convs", convs, run, **setup)
        save_rows(Path(args.records) / "networks", nets, run, **setup)


if __name__ == "__main__":
    main()
