"""CPU latency and inference memory of ×2 super-resolution on a 256×256 input, side by side.

    .venv/bin/python benchmarks/superres.py

Models: FFNet_sr-light and FFNet_sr (``metamixer.core.deploy(model, "cpu")``, traced and frozen
with ``torch.jit.freeze``), the authors' FFNet_sr-light in their deployed form
(``authors_deployed.py``, loaded with our folded weights; deployed like FFNet),
basicsr's SwinIR in its light configuration (embed_dim 60, depths 6×4, heads 6×4, window 8,
``pixelshuffledirect``) and EDSR-baseline (64 features, 16 blocks; deployed like FFNet), and bicubic
interpolation.
``--compile`` adds each FFNet-SR model once more under ``torch.compile`` (Inductor, weight
freezing; its compile time, the first call included, as ``compile s``).
Each model runs in a fresh subprocess; after a warm-up the heap is trimmed and the kernel's peak-RSS
counter reset (``benchmarks/peak_memory.py``), so "inference memory" is the high-water mark of the
timed runs above the loaded, deployed model; latency is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from cpu_peak import peak_gmacs, peak_note
from peak_memory import peak_mb, reset_peak
from records import print_table, run_name, save_rows

MODELS = ["ffnet_sr_light", "ffnet_sr_light_authors", "ffnet_sr", "swinir_light", "edsr_baseline",
          "bicubic"]  # fmt: skip


def build(name: str, scale: int):
    import torch
    import torch.nn.functional as F
    from authors_deployed import authors_deployed, copy_parameters
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.swinir_arch import SwinIR

    from metamixer.core import build_network, deploy
    from metamixer.superres import VARIANTS

    if name in VARIANTS:
        return deploy(build_network(name, {"scale": scale}), "cpu"), True
    if name == "ffnet_sr_light_authors":
        theirs = authors_deployed("ffnet_sr_light", scale=scale).eval()
        copy_parameters(
            deploy(build_network("ffnet_sr_light", {"scale": scale}), "portable"), theirs
        )
        return theirs, True
    if name == "swinir_light":
        return SwinIR(
            upscale=scale, img_size=64, window_size=8, img_range=1.0, depths=[6] * 4,
            embed_dim=60, num_heads=[6] * 4, mlp_ratio=2, upsampler="pixelshuffledirect",
        ).eval(), False  # fmt: skip
    if name == "edsr_baseline":
        return EDSR(3, 3, num_feat=64, num_block=16, upscale=scale, res_scale=1).eval(), True

    class Bicubic(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    return Bicubic(), False


COMPILED = " (compile)"


def measure(name: str, size: int, scale: int, repeats: int) -> dict:
    """Runs in the child process: build, deploy, time, report inference memory."""
    import torch

    warnings.filterwarnings("ignore")
    compiled = name.endswith(COMPILED)
    model, channels_last = build(name.removesuffix(COMPILED), scale)
    from metamixer.core import count_macs

    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 3, size, size)
    macs = count_macs(copy.deepcopy(model), x) if params else 0
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.no_grad():
        if compiled:
            import torch._inductor.config as inductor

            inductor.freezing = True
            model = torch.compile(model)
        elif name.startswith("ffnet") or name == "edsr_baseline":
            model = torch.jit.freeze(torch.jit.trace(model, x))
    with torch.inference_mode():
        model(x)  # warm-up (and jit specialisation, compilation)
    compile_s = time.perf_counter() - start
    loaded_mb = reset_peak()
    with torch.inference_mode():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return {
        "name": name,
        "params": params,
        "macs": macs,
        "latency": statistics.median(times),
        "inference_mb": peak_mb() - loaded_mb,
        **({"compile_s": compile_s} if compiled else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS,
                        help="subset (SwinIR-light, the reference, is always run)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="also FFNet-SR under torch.compile")
    parser.add_argument("--records", help="also write each row as a record under this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.size, args.scale, args.repeats)))
        return
    rows = {}
    names = [m for m in MODELS if m in args.models or m == "swinir_light"]
    if args.compile:
        names += [m + COMPILED for m in names if m.startswith("ffnet") and "authors" not in m]
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size),
               "--scale", str(args.scale), "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
        r = rows[name]
        print(
            f"  {name:15s} {r['latency']:.3f} s  inference {r['inference_mb']:.0f} MB",
            flush=True,
        )
    import torch

    base = rows["swinir_light"]
    print(
        f"\n×{args.scale} on a {args.size}×{args.size} input, CPU float32, "
        f"{torch.get_num_threads()} threads, batch 1 (latency: median of {args.repeats}; "
        f"{peak_note(torch.get_num_threads())})\n"
    )
    peak = peak_gmacs(torch.get_num_threads())
    table = []
    for r in rows.values():
        rate = r["macs"] / r["latency"] / 1e9
        table.append({"group": {"model": r["name"], "params": f"{r['params']:,}"}, "metrics": {
            "latency s": r["latency"], "× SwinIR-light": r["latency"] / base["latency"],
            "inference MB": r["inference_mb"], "MB × SwinIR-light": r["inference_mb"] / base["inference_mb"],
            "GMAC/s": rate, "% of peak": 100 * rate / peak,
            **({"compile s": r["compile_s"]} if "compile_s" in r else {}),
        }})  # fmt: skip
    print_table(table)
    if args.records:  # runs accumulate: tables show mean ± std over runs
        save_rows(Path(args.records), table, run_name(), size=args.size, scale=args.scale,
                  repeats=args.repeats)  # fmt: skip


if __name__ == "__main__":
    main()
