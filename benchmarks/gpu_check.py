"""The GPU check: each modality's training step in float32 and mixed precision, our sparse
depthwise conv against dense ``conv3d``, and inference throughput of FFNet against the authors'
deployed FFNet and ConvNeXt-T (vision) and against the authors' deployed FFNet_sr-light (SR), each
result written as a record (``metamixer.lab.results``) for the tables of docs/gpu-check.md.

    scripts/gpu-check            # on a GPU machine (installs spconv's CUDA build, runs this)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --records /tmp/gpu  # dry run

Throughput: bf16 autocast, channels-last, ``torch.inference_mode``; FFNet folded
(``deploy(model, "portable")``) and as trained (unfused); the authors' deployed architecture
(``authors_deployed.py``) loaded with our folded weights and checked to compute the same function;
each in every ``--modes`` (``eager``; ``compile``: ``torch.compile``).  The models of a task are
timed round-robin (``--rounds`` × ``--seconds``): images/s is the median over rounds, the ratio
the median of the per-round ratios to the task's first model (our fused FFNet) in the same mode.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from authors_deployed import authors_deployed, copy_parameters
from records import run_name, save_rows
from round_robin import median_ratio, round_robin

import metamixer.pointcloud
import metamixer.superres
import metamixer.timeseries
import metamixer.vision  # noqa: F401  (each package registers its architectures)
from metamixer.core import ARCHITECTURES, build_network, deploy
from metamixer.lab.results import grouped_table, load_records, markdown

#: one small variant per modality for the training steps
STEP_ARCHS = ("ffnet_test", "ffnet_sr_test", "ffnet_ts_test", "sparse_ffnet_test")
#: task (its input size filled in) -> [(label, architecture, form)]; form: "fused" (ours,
#: deployed), "unfused" (ours as trained), "authors" (their deployed architecture with our folded
#: weights), "timm"
THROUGHPUT = {
    "classification {res}²": [
        ("ffnet_1 (fused)", "ffnet_1", "fused"),
        ("ffnet_1 authors' (fused)", "ffnet_1", "authors"),
        ("ffnet_1 (unfused)", "ffnet_1", "unfused"),
        ("convnext_tiny", "convnext_tiny", "timm"),
    ],
    "super-resolution ×2 of {res}²": [
        ("ffnet_sr_light (fused)", "ffnet_sr_light", "fused"),
        ("ffnet_sr_light authors' (fused)", "ffnet_sr_light", "authors"),
    ],
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
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(*example)
    loss = out.float().square().mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    finite = bool(torch.isfinite(loss)) and all(torch.isfinite(p).all() for p in net.parameters())
    return {"group": {"check": f"training step {name}", "precision": precision,
                      "output dtype": str(out.dtype).removeprefix("torch.")},
            "metrics": {"loss": loss.item()}, "finite": finite}  # fmt: skip


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
    return {"group": {"check": "sparse depthwise conv vs dense conv3d", "precision": "64-true",
                      "output dtype": "float64"},
            "metrics": {"max abs diff": diff}, "finite": diff < 1e-9}  # fmt: skip


def build(arch: str, form: str) -> torch.nn.Module:
    """The network in its benchmark form, eval mode (the same weights in every form of one
    architecture)."""
    torch.manual_seed(0)
    task = {"scale": 2} if arch.startswith("ffnet_sr") else {"num_classes": 1000, "in_chans": 3}
    if form == "timm":
        return timm.create_model(arch, num_classes=1000).eval()
    net = build_network(arch, task)
    if form == "authors":
        theirs = authors_deployed(arch, **task)
        copy_parameters(deploy(net, "portable"), theirs)
        return theirs.eval()
    return (net if form == "unfused" else deploy(net, "portable")).eval()


def same_function(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |difference| of the two outputs relative to the largest |output| (float32)."""
    with torch.inference_mode():
        a, b = ours(x), theirs(x)
    return float((a - b).abs().max() / a.abs().max())


def task_models(task: str, args: argparse.Namespace) -> tuple[dict, torch.Tensor, dict]:
    """The task's models on the device, its input batch, and how far each authors' network is
    from ours (relative max |difference|; refused beyond 1e-2)."""
    res = 64 if args.quick else (128 if task.startswith("super") else 256)
    models, fidelity = {}, {}
    for label, arch, form in THROUGHPUT[task]:
        net = build(arch, form).to(args.device)
        models[label] = net.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, res, res, device=args.device)
    x = x.contiguous(memory_format=torch.channels_last)
    first = next(iter(models))
    for label, _, form in THROUGHPUT[task]:
        if form == "authors":
            fidelity[label] = same_function(models[first], models[label], x)
            if fidelity[label] > 1e-2:
                raise SystemExit(f"error: {label} differs from {first}: {fidelity[label]:.1e}")
    return models, x, fidelity


def throughput(task: str, mode: str, built: tuple, args: argparse.Namespace) -> list[dict]:
    """The task's models in one mode, timed round-robin; one record per model."""
    models, x, fidelity = built
    runners = {k: torch.compile(m) if mode == "compile" else m for k, m in models.items()}
    dtype = torch.bfloat16
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    with torch.inference_mode(), torch.autocast(args.device, dtype=dtype):
        for runner in runners.values():
            for _ in range(2):  # warm-up (compilation, cuDNN's algorithm choice)
                runner(x)
        calls = round_robin({k: partial(r, x) for k, r in runners.items()}, args.rounds,
                            args.seconds, sync)  # fmt: skip
    per_round = {k: [c * len(x) for c in v] for k, v in calls.items()}
    first = next(iter(per_round))
    records = []
    for order, (label, values) in enumerate(per_round.items()):
        ratio = median_ratio(values, per_round[first])
        records.append({
            "group": {"task": task.format(res=x.shape[-1]), "model": label, "mode": mode},
            "metrics": {"images/s": statistics.median(values), "× ours (fused)": ratio},
            "batch": len(x), "resolution": x.shape[-1], "dtype": str(dtype),
            "rounds": args.rounds, "seconds per round": args.seconds,
            "max rel diff vs ours": fidelity.get(label),
            "order": 100 * list(THROUGHPUT).index(task) + 10 * args.modes.index(mode) + order,
        })  # fmt: skip
        print(f"  {mode:7s} {label:32s} {records[-1]['metrics']['images/s']:9.1f} images/s "
              f"({ratio:.2f}× {first})", flush=True)  # fmt: skip
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"],
                        choices=["eager", "compile"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per model per round")
    parser.add_argument("--records", default="results/records/gpu-check",
                        help="folder of the records (steps/, throughput/; each run adds its own, "
                        "tables show mean ± std over runs)")  # fmt: skip
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --device cpu for the dry run")
    if args.quick:
        args.batch, args.rounds, args.seconds = 2, 2, 0.05
    out, run = Path(args.records), run_name()  # runs accumulate
    checks = [training_step(a, p, args.device) for a in STEP_ARCHS for p in precisions(args.device)]
    checks.append(sparse_equivalence(args.device))
    save_rows(out / "steps", checks, run, device=args.device)
    built = {task: task_models(task, args) for task in THROUGHPUT}
    for mode in args.modes:  # eager first: its records are kept if compiling fails
        for task in THROUGHPUT:
            save_rows(out / "throughput", throughput(task, mode, built[task], args), run,
                      device=args.device)  # fmt: skip
    for part in ("steps", "throughput"):
        print(f"\n{part}:\n{markdown(grouped_table(load_records([out / part])))}")
    failed = [c["group"]["check"] for c in checks if not c["finite"]]
    if failed:
        raise SystemExit(f"error: failed checks: {', '.join(failed)}")
    print(f"\nwrote the records under {out}")


if __name__ == "__main__":
    main()
