"""The export command's runtime targets (lab side of ``metamixer.core.runtimes``).

Shared by the modalities' export commands, which stay thin: they add ``runtime_arguments`` to
their parser and hand the validated network to ``export_for_runtime`` with a ``TaskCheck``
saying how the task is scored.  The accuracy check re-runs the checkpoint's own ``test`` (its
run folder's ``config.yaml``, the same data and metric code as the run's record) twice: with the
fp32 PyTorch network, and with the exported model run by its runtime in place of the network
(``SwapNetwork``).  Each test writes its run folder with ``metrics.json`` and ``record.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from metamixer.core import runtimes
from metamixer.core.checkpoint import export_onnx, folded_copy


@dataclass(frozen=True)
class TaskCheck:
    """How a task is scored: the test metric, in the units it is logged in; the tolerated drop
    in those units; the export's input; and the task's int8 default per format,
    ``(quantizer, placement)``, chosen by measurement (README, *Runtimes*)."""

    metric: str
    tolerance: float
    higher_is_better: bool
    names: tuple[str, str]
    dynamic_axes: dict[str, dict[int, str]]
    example_shape: tuple[int, ...]
    int8_defaults: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"onnx": ("ort", "weighted"), "openvino": ("ort", "weighted")}
    )


def runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a runtime export (``--format onnx|openvino`` is the caller's)."""
    group = parser.add_argument_group("runtime targets (--format onnx | openvino)")
    group.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="inference precision the runtime is told to use: bf16 (openvino only) is checked "
        "on the test data like int8; with --int8 it applies to the ops left in float",
    )  # fmt: skip
    group.add_argument(
        "--int8", action="store_true",
        help="static int8 post-training quantization calibrated on --calibration",
    )  # fmt: skip
    group.add_argument("--calibration", help="folder of training images (read recursively)")
    group.add_argument("--calibration-batches", type=int, default=16)
    group.add_argument("--calibration-batch-size", type=int, default=8)
    group.add_argument(
        "--placement", choices=runtimes.PLACEMENTS,
        help="where quantize/dequantize pairs go: weighted = inputs of convs / matmuls only; "
        "all = every op the quantizer supports; dense = weighted, depthwise convs kept float "
        "(default: the task's, chosen by measurement)",
    )  # fmt: skip
    group.add_argument(
        "--quantizer", choices=runtimes.QUANTIZERS,
        help="ort: ONNX Runtime's QDQ quantizer (asymmetric uint8 activations; for openvino its "
        "file is converted to IR); nncf: NNCF, performance preset (symmetric activations); "
        "nncf-mixed: NNCF, mixed preset (asymmetric activations) (default: the task's)",
    )  # fmt: skip
    group.add_argument(
        "--tolerance", type=float,
        help="largest tolerated drop of the test metric against fp32, in the units it is "
        "logged in (top-1 and mIoU as fractions: 0.005 = 0.5 points; PSNR in dB; default: "
        "the task's)",
    )  # fmt: skip
    group.add_argument(
        "--allow-accuracy-drop", action="store_true",
        help="keep a bf16 / int8 model whose metric drops by more than the tolerance",
    )  # fmt: skip
    group.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")


def runtime_of(fmt: str) -> str:
    return {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]


def export_for_runtime(
    model: nn.Module,
    args: argparse.Namespace,
    task: TaskCheck,
    *,
    checkpoint: str | None,
    modality_main: Callable[..., Any] | None,
    load_image: Callable[[Path], Tensor] | None,
) -> dict[str, Any]:
    """Write ``args.out`` for ``args.format``'s runtime (fp32 / bf16 / int8) and check it:
    fp32 numerically against the PyTorch network (max |diff|), bf16 and int8 on the task's test
    data (``TaskCheck``).  Writes ``<out>.calibration.json`` (int8) and ``<out>.accuracy.json``
    (bf16, int8).  A metric outside the tolerance removes the model and raises
    ``AccuracyError`` naming the drop, unless ``args.allow_accuracy_drop``.  Returns the report
    that was printed."""
    runtime = runtime_of(args.format)
    out = Path(args.out)
    if runtime == "openvino" and out.suffix != ".xml":
        raise ValueError(f"--format openvino writes an .xml (+ .bin), got --out {out}")
    if args.precision == "bf16" and runtime != "openvino":
        raise ValueError("--precision bf16 is offered with --format openvino only")
    checked = args.int8 or args.precision != "fp32"
    if checked and (checkpoint is None or modality_main is None):
        raise ValueError("bf16 / int8 are checked on the checkpoint's test data: give --checkpoint")
    if args.int8 and not args.calibration:
        raise ValueError("--int8 needs --calibration (a folder of training images)")
    calibration = None
    if args.int8:  # read the images first: bad calibration data fails before any export
        if load_image is None:
            raise ValueError("no calibration reader for this model")
        calibration = runtimes.calibration_set(
            args.calibration, load_image, batch_size=args.calibration_batch_size,
            batches=args.calibration_batches,
        )  # fmt: skip
    report: dict[str, Any] = {"format": args.format, "runtime": runtime, "out": str(out),
                              "precision": "int8" if args.int8 else args.precision}  # fmt: skip
    folded = folded_copy(model)
    example = torch.randn(task.example_shape)
    check = torch.randn((2, *task.example_shape[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        plain_onnx = runtime == "onnxruntime" and not args.int8
        fp32 = out if plain_onnx else Path(tmp) / f"{out.stem}.onnx"
        report["onnxruntime vs PyTorch max |diff|"] = export_onnx(
            folded, fp32, example, check, names=task.names, dynamic_axes=task.dynamic_axes,
        )  # fmt: skip
        if args.int8:
            assert calibration is not None
            quantizer, placement = task.int8_defaults[args.format]
            quantized = runtimes.quantize(
                fp32, out, calibration, runtime=runtime,
                placement=args.placement or placement, quantizer=args.quantizer or quantizer,
            )  # fmt: skip
            kept = runtimes.kept_float(out, runtime, fp32)
            report["kept in float"] = kept
            summary = {
                "calibration": calibration.summary(), "quantizer": quantized.quantizer,
                "placement": quantized.placement, "settings": quantized.settings,
                "executed precisions": runtimes.executed_precisions(out, runtime, args.precision),
                "weighted ops kept in float": kept,
            }  # fmt: skip
            runtimes.write_json(_sidecar(out, "calibration"), summary)
        elif runtime == "openvino":
            runtimes.to_openvino(fp32, out)
        predictor = runtimes.load(out, runtime, args.precision, args.threads)
        report[f"{runtime} vs PyTorch max |diff|"] = runtimes.max_difference(
            predictor, folded, check
        )
    if checked:
        assert checkpoint is not None and modality_main is not None
        result = accuracy_check(modality_main, checkpoint, out, runtime, args.precision, task,
                                tolerance=args.tolerance)  # fmt: skip
        report["accuracy"] = result.as_dict()
        runtimes.write_json(_sidecar(out, "accuracy"), report)
        if not result.within:
            message = (f"{report['precision']} {result.describe()}: {result.drop - result.tolerance:.4g} "
                       "beyond the tolerance")  # fmt: skip
            if not args.allow_accuracy_drop:
                remove_model(out)
                raise runtimes.AccuracyError(
                    f"{message}; {out} not kept (--allow-accuracy-drop keeps it)"
                )
            print(f"warning: {message}; kept because of --allow-accuracy-drop")
    return report


def _sidecar(out: Path, kind: str) -> Path:
    return out.with_name(f"{out.stem}.{kind}.json")


def remove_model(out: Path) -> None:
    for path in (out, out.with_suffix(".bin")) if out.suffix == ".xml" else (out,):
        path.unlink(missing_ok=True)


def print_report(report: dict[str, Any]) -> None:
    print(f"wrote {report['out']} ({report['runtime']}, {report['precision']})")
    for key, value in report.items():
        if "max |diff|" in key:
            print(f"  {key} = {value:.2e}")
    if report.get("kept in float"):
        kept = report["kept in float"]
        print(f"  {len(kept)} weighted ops kept in float by {report['runtime']} "
              f"(not quantized): {', '.join(kept)}")  # fmt: skip
    if "accuracy" in report:
        a = report["accuracy"]
        print(f"  {a['metric']}: {a['measured']:.4f} vs fp32 {a['reference']:.4f} (drop "
              f"{a['drop']:+.4f}, tolerance {a['tolerance']:g})")  # fmt: skip


class SwapNetwork(Callback):
    """Test with a runtime model in place of the LightningModule's network (``model``, and
    ``ema`` where one is kept): the module's own test code scores it."""

    def __init__(self, path: str, runtime: str, precision: str = "fp32", threads: int = 0):
        self.network = runtimes.RuntimeNetwork(runtimes.load(path, runtime, precision, threads))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.model = self.network
        if getattr(pl_module, "ema", None) is not None:
            pl_module.ema = self.network


def run_config(checkpoint: str | Path) -> Path:
    """The ``config.yaml`` of the checkpoint's run folder (``RUN/checkpoints/x.ckpt``)."""
    config = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"no {config}: the accuracy check re-runs the checkpoint's test "
                                "with its run folder's config.yaml")  # fmt: skip
    return config


def test_metrics(
    modality_main: Callable[..., Any], checkpoint: str | Path, extra: Sequence[str] = ()
) -> tuple[dict[str, float], Path]:
    """Run the checkpoint's ``test`` (its run config) and return the metrics and run folder."""
    cli = modality_main(["test", "--config", str(run_config(checkpoint)),
                         f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false",
                         "--trainer.logger=false", *extra])  # fmt: skip
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    return metrics, Path(cli.run_dir)


def metric_key(metrics: dict[str, float], metric: str) -> str:
    """``metric`` itself, or the one test metric ending with it (e.g. ``/psnr`` of one held-out
    set, not the bicubic baseline's)."""
    if metric in metrics:
        return metric
    found = [k for k in metrics if k.startswith("test/") and k.endswith(metric)
             and "bicubic" not in k]  # fmt: skip
    if len(found) != 1:
        raise KeyError(f"the test logged {len(found)} metrics matching {metric!r}: "
                       f"{', '.join(sorted(metrics))}")  # fmt: skip
    return found[0]


def image_reader(
    modality_main: Callable[..., Any], checkpoint: str | Path, folder: str | Path
) -> Callable[[Path], Tensor]:
    """How the checkpoint's data module reads a user's image for ``predict`` (grey / RGB,
    resizing, normalization as in its run config): the calibration images are read the same
    way."""
    import yaml

    runtimes.image_files(folder)  # no image at all: one error before anything is built
    config = yaml.safe_load(run_config(checkpoint).read_text())
    for key in ("ckpt_path", "weights_only", "test_after_fit"):  # fit / test only
        config.pop(key, None)
    data = config["data"].get("init_args", config["data"])
    data["predict_path"] = str(folder)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        cli = modality_main(["--config", str(path), f"--trainer.default_root_dir={tmp}",
                             "--trainer.logger=false"], run=False)  # fmt: skip
        dataset = cli.datamodule.predict_dataloader().dataset
    load: Callable[[Path], Tensor] = dataset.load
    return load


def accuracy_check(
    modality_main: Callable[..., Any],
    checkpoint: str | Path,
    model: Path,
    runtime: str,
    precision: str,
    task: TaskCheck,
    *,
    tolerance: float | None = None,
) -> runtimes.AccuracyCheck:
    """The task metric of ``model`` (run by ``runtime`` at ``precision``) against the fp32
    PyTorch network's, both from the checkpoint's test."""
    reference, _ = test_metrics(modality_main, checkpoint, ["--name", "export-check-fp32"])
    swap = [
        "--name", f"export-check-{runtime}-{model.stem}",
        f"--trainer.callbacks+={SwapNetwork.__module__}.SwapNetwork",
        f"--trainer.callbacks.path={model}", f"--trainer.callbacks.runtime={runtime}",
        f"--trainer.callbacks.precision={precision}",
    ]  # fmt: skip
    measured, _ = test_metrics(modality_main, checkpoint, swap)
    name = metric_key(measured, task.metric)
    return runtimes.AccuracyCheck(
        name, reference[name], measured[name],
        task.tolerance if tolerance is None else tolerance, task.higher_is_better,
    )  # fmt: skip
