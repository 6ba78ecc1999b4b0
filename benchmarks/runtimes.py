"""CPU inference in every deployment target side by side: PyTorch, ONNX Runtime and OpenVINO, in
fp32, bf16 and int8, for FFNet-1, the authors' FFNet-1, ConvNeXt-T and FFNet_sr-light ×2.

    .venv/bin/python benchmarks/runtimes.py --records results/records/cpu/runtimes   # README
    .venv/bin/python benchmarks/runtimes.py --res 64 --sr-res 32 --batch 1 --rounds 1   # smoke

Targets (``metamixer.core.runtimes``; each network folded with ``deploy(model, "portable")``,
exported once as ONNX and checked against PyTorch before timing):

* ``torch fp32``: today's best deployed PyTorch mode: ``deploy(model, "cpu")``, traced, frozen
  and run by the oneDNN Graph fuser (classifiers), traced and frozen (SR: ``jit``);
* ``torch compile``: ``torch.compile`` (Inductor, weight freezing); its compile time is recorded;
* ``onnxruntime fp32`` / ``int8`` (ONNX Runtime's static QDQ quantizer, per-channel weights);
* ``openvino fp32`` / ``bf16`` (the same IR, ``INFERENCE_PRECISION_HINT``) / ``int8`` (ONNX
  Runtime's QDQ file converted to IR) / ``int8+bf16`` (the int8 IR, the ops left in float in bf16);
* quantizers and placements (FFNet-1, batch 1): ``all`` and ``dense`` (see
  ``runtimes.PLACEMENTS``), and NNCF's performance and mixed presets; FFNet-SR: NNCF's
  performance preset (its int8 default for OpenVINO).

Calibration uses random images (speed only: untrained networks).  Per workload the targets are
timed round-robin (``--rounds`` × ``--seconds``); img/s is the median over rounds and
``× base`` the median of the per-round ratios to the workload's base (the authors' FFNet-1 in
today's best PyTorch mode for the classifiers, our FFNet_sr-light traced and frozen for SR).
GMAC/s counts the network's MACs; ``% int8 peak`` is against this CPU's int8 peak
(``cpu_peak.py``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import timm
import torch
from authors_deployed import authors_deployed, copy_parameters
from cpu_peak import int8_peak_gmacs, int8_peak_note, peak_note
from records import print_table, run_name, save_rows
from round_robin import median_ratio, round_robin
from torchscript import torchscript

import metamixer.superres
import metamixer.vision  # noqa: F401  (register the architectures)
from metamixer.core import build_network, count_macs, deploy, runtimes
from metamixer.core.checkpoint import export_onnx

#: label, architecture, form (ours / authors / timm), classifier (True) or SR
MODELS = [
    ("ffnet_1 (fused)", "ffnet_1", "ours", True),
    ("ffnet_1 authors' (fused)", "ffnet_1", "authors", True),
    ("convnext_tiny", "convnext_tiny", "timm", True),
    ("ffnet_sr_light ×2 (fused)", "ffnet_sr_light", "ours", False),
]
#: target name -> (runtime, precision, int8 placement or None, quantizer); int8 targets use
#: ONNX Runtime's quantizer (QDQ) unless named
TARGETS = {
    "torch fp32": ("torch", "fp32", None, ""),
    "torch compile": ("compile", "fp32", None, ""),
    "onnxruntime fp32": ("onnxruntime", "fp32", None, ""),
    "onnxruntime int8": ("onnxruntime", "fp32", "weighted", "ort"),
    "openvino fp32": ("openvino", "fp32", None, ""),
    "openvino bf16": ("openvino", "bf16", None, ""),
    "openvino int8": ("openvino", "fp32", "weighted", "ort"),
    "openvino int8+bf16": ("openvino", "bf16", "weighted", "ort"),
}
#: quantizers and quantize/dequantize placements compared on FFNet-1 at batch 1
PLACEMENT_TARGETS = {
    "onnxruntime int8, all ops": ("onnxruntime", "fp32", "all", "ort"),
    "onnxruntime int8, depthwise float": ("onnxruntime", "fp32", "dense", "ort"),
    "openvino int8, all ops": ("openvino", "fp32", "all", "ort"),
    "openvino int8, depthwise float": ("openvino", "fp32", "dense", "ort"),
    "openvino int8, NNCF performance": ("openvino", "fp32", "weighted", "nncf"),
    "openvino int8, NNCF mixed": ("openvino", "fp32", "weighted", "nncf-mixed"),
}


def network(arch: str, form: str, classifier: bool) -> torch.nn.Module:
    """The untrained network, folded (eval)."""
    torch.manual_seed(0)
    if form == "timm":
        return timm.create_model(arch, num_classes=1000).eval()
    task = {"num_classes": 1000, "in_chans": 3} if classifier else {"scale": 2}
    net = build_network(arch, task)
    if form == "authors":
        theirs = authors_deployed(arch, **task).eval()
        copy_parameters(deploy(copy.deepcopy(net), "portable"), theirs)
        return theirs
    return deploy(net, "portable")


def torch_runner(model: torch.nn.Module, x: torch.Tensor, mode: str, form: str) -> Callable:
    """PyTorch fp32: ``deploy(model, "cpu")`` for ours, channels-last for the others."""
    model = copy.deepcopy(model)
    model = deploy(model, "cpu") if form == "ours" else model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    if mode == "compile":
        import torch._inductor.config as inductor

        inductor.freezing = True
        compiled = torch.compile(model)
        return partial(compiled, x)
    return partial(torchscript(model, x, mode), x)


def build_targets(
    label: str,
    model: torch.nn.Module,
    form: str,
    classifier: bool,
    shape: tuple[int, ...],
    targets: dict[str, tuple[str, str, str | None, str]],
    folder: Path,
    threads: int,
) -> tuple[dict[str, Callable], dict[str, float]]:
    """Each target's zero-argument runner, and the seconds each took to prepare (export,
    quantization, compilation); a target that fails is reported and left out."""
    x = torch.rand(shape)
    names = ("image", "logits") if classifier else ("lr", "sr")
    onnx = folder / "fp32.onnx"
    # SR: any image size, calibrated on 64² patches as the export command does (ORT's
    # calibration keeps every activation of every sample: 8 × 256² SR inputs exceed 23 GB)
    axes = {0: "b"} if classifier else {0: "b", 2: "h", 3: "w"}
    export_onnx(model, onnx, x[:1], x[:1], names=names,
                dynamic_axes={names[0]: axes, names[1]: axes}, atol=1e-3)  # fmt: skip
    xml = runtimes.to_openvino(onnx, folder / "fp32.xml")
    sample = (1, *shape[1:]) if classifier else (1, 3, 64, 64)
    calibration = runtimes.CalibrationSet(
        [np.random.default_rng(i).random(sample, dtype=np.float32) for i in range(8)],
        "random", [], [], 1,
    )  # fmt: skip
    files: dict[tuple[str, str, str], Path] = {}
    runners: dict[str, Callable] = {}
    prepare: dict[str, float] = {}
    array = x.numpy()
    for name, (runtime, precision, placement, quantizer) in targets.items():
        start = time.perf_counter()
        try:
            if runtime in ("torch", "compile"):
                mode = "compile" if runtime == "compile" else ("onednn" if classifier else "jit")
                run = torch_runner(model, x, mode, form)
                with torch.inference_mode():
                    for _ in range(3):  # compilation / profiling and fusion: the first calls
                        run()
                runners[name] = run
            else:
                path = {"onnxruntime": onnx, "openvino": xml}[runtime]
                if placement is not None:
                    key = (runtime, placement, quantizer)
                    path = files.get(key) or quantized(onnx, folder, calibration, key, files)
                predictor = runtimes.load(path, runtime, precision, threads, shape)
                predictor(array)
                runners[name] = partial(predictor, array)
        except Exception as error:  # a runtime that cannot run a network is a result
            print(f"  {label:28s} {name:40s} fails: {str(error).splitlines()[0][:200]}")
            continue
        prepare[name] = time.perf_counter() - start
    return runners, prepare


def quantized(
    onnx: Path,
    folder: Path,
    calibration: runtimes.CalibrationSet,
    key: tuple[str, str, str],
    files: dict[tuple[str, str, str], Path],
) -> Path:
    runtime, placement, quantizer = key
    out = folder / f"int8-{placement}-{quantizer}{'.xml' if runtime == 'openvino' else '.onnx'}"
    runtimes.quantize(onnx, out, calibration, runtime=runtime, placement=placement,
                      quantizer=quantizer)  # fmt: skip
    files[key] = out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=int, default=256, help="classifier input size")
    parser.add_argument("--sr-res", type=int, default=256, help="SR input size")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="classifiers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per target per round")
    parser.add_argument("--models", nargs="+", help="subset of labels or architectures")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--no-placements", action="store_true")
    parser.add_argument("--records", help="write each row as a record under FOLDER/<workload>")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging_quiet()
    threads = torch.get_num_threads()
    chosen = [m for m in MODELS if not args.models or m[0] in args.models or m[1] in args.models]
    workloads = [(f"classification {args.res}² batch {b}", b, True) for b in args.batch]
    workloads.append((f"super-resolution ×2 of {args.sr_res}² batch 1", 1, False))
    run, peak = run_name(), int8_peak_gmacs(threads)[0]
    for workload, batch, classifier in workloads:
        models = [m for m in chosen if m[3] == classifier]
        if not models:
            continue
        res = args.res if classifier else args.sr_res
        shape = (batch, 3, res, res)
        runners: dict[str, Callable] = {}
        info: dict[str, tuple[str, str, float, float]] = {}
        for label, arch, form, _ in models:
            model = network(arch, form, classifier)
            gmacs = count_macs(copy.deepcopy(model), torch.rand(1, 3, res, res)) / 1e9
            targets = {k: TARGETS[k] for k in args.targets}
            if form == "ours" and classifier and batch == 1 and not args.no_placements:
                targets |= PLACEMENT_TARGETS
            elif not classifier and not args.no_placements:  # SR's int8 default for OpenVINO
                targets |= {k: v for k, v in PLACEMENT_TARGETS.items() if "NNCF perf" in k}
            with tempfile.TemporaryDirectory() as tmp:
                made, prepare = build_targets(label, model, form, classifier, shape, targets,
                                              Path(tmp), threads)  # fmt: skip
            for name, runner in made.items():
                key = f"{label} | {name}"
                runners[key] = runner
                info[key] = (label, name, gmacs, prepare[name])
        base_label = "ffnet_1 authors' (fused) | torch fp32" if classifier else None
        base_label = base_label if base_label in runners else next(iter(runners))
        print(f"\n{workload}: timing {len(runners)} targets round-robin", flush=True)
        load_before = os.getloadavg()[0]  # other work on the machine: PyTorch's OpenMP threads
        with torch.inference_mode():  # suffer most from it (they wait for each other)
            calls = round_robin(runners, args.rounds, args.seconds)
        load = {"1-min load average before": load_before, "after": os.getloadavg()[0]}
        per_round = {k: [c * batch for c in v] for k, v in calls.items()}
        rows = []
        for order, (key, values) in enumerate(per_round.items()):
            label, name, gmacs, prepare = info[key]
            rate = statistics.median(values)
            metrics = {
                "img/s": rate, "× base": median_ratio(values, per_round[base_label]),
                "min img/s": min(values), "max img/s": max(values), "GMAC/s": rate * gmacs,
                "% int8 peak": 100 * rate * gmacs / peak if peak else float("nan"),
            }  # fmt: skip
            if name == "torch compile":
                metrics["compile s"] = prepare
            rows.append({"group": {"network": label, "target": name}, "metrics": metrics,
                         "order": order, "workload": workload, "base": base_label,
                         "batch": batch, "resolution": res, "GMACs": gmacs,
                         "prepare seconds": prepare, "load": load})  # fmt: skip
        print(f"\n{workload}; {threads} threads; {peak_note(threads)}; {int8_peak_note(threads)}; "
              f"× base: median per-round ratio to {base_label}; load average {load}\n")  # fmt: skip
        print_table(rows)
        if args.records:  # runs accumulate: README tables show mean ± std over runs
            slug = "ffnet-sr-light" if not classifier else f"classification-b{batch}"
            save_rows(Path(args.records) / slug, rows, run, rounds=args.rounds,
                      seconds=args.seconds)  # fmt: skip


def logging_quiet() -> None:
    import logging

    for name in ("nncf", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
