"""Deployment: fold a trained FFNet classifier or segmentation network and export it to ONNX,
checked with onnxruntime, or to OpenVINO; in fp32, bf16 (OpenVINO) or int8 (static
post-training quantization calibrated on a folder of training images, checked on the run's test
data; ``metamixer.lab.runtime_export``).

``python -m metamixer.vision.export --checkpoint RUN/checkpoints/last.ckpt --img_size 32 \
--out ffnet.onnx`` (a checkpoint of ``metamixer.vision`` or ``metamixer.vision.segmentation``; a
segmentation network maps ``image (B, 3, H, W)`` to ``logits (B, classes, H, W)`` at the exported
size, a multiple of 32).

``… --format openvino --out m.xml --int8 --calibration TRAIN_IMAGES [--calibration-batches N]``
writes the int8 model, ``m.calibration.json`` and ``m.accuracy.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from metamixer.core.checkpoint import export_coreml, export_onnx
from metamixer.lab.cli import run_cli
from metamixer.lab.main import alias
from metamixer.lab.runtime_export import (
    TaskCheck,
    export_for_runtime,
    image_reader,
    print_report,
    runtime_arguments,
)
from metamixer.vision.backbone import build_classifier, classifier_from_checkpoint
from metamixer.vision.models.ffnet_weights import convert_official_state_dict
from metamixer.vision.models.state_dicts import load_state_dict_strict, load_weights_file


def export_classifier(
    model: nn.Module, path: str | Path, input_shape: tuple[int, int, int, int], atol: float = 1e-4
) -> float:
    """Fold and export an image classifier (dynamic batch), checked with onnxruntime."""
    return export_onnx(
        model, path, torch.randn(input_shape), torch.randn((3, *input_shape[1:])),
        names=("image", "logits"), dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        atol=atol,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fold an FFNet and export it to ONNX (checked).")
    parser.add_argument(
        "--checkpoint",
        help="a Lightning checkpoint of ImageClassifier or SemanticSegmenter (arch read from it)",
    )
    parser.add_argument(
        "--weights", choices=("raw", "ema"), default="raw",
        help="with --checkpoint: the trained weights (a distilled model's heads combined) or the "
        "EMA copy, each exactly as validated (val/* or val_ema/*)",
    )  # fmt: skip
    parser.add_argument(
        "--arch", default="ffnet_1",
        help="registered architecture or timm model name (without --checkpoint)",
    )  # fmt: skip
    parser.add_argument(
        "--weights_file", help="local weights for --arch (authors' release or ours)"
    )
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--in_chans", type=int, default=3)
    parser.add_argument("--img_size", type=int, default=256)
    parser.add_argument("--out", required=True, help="output .onnx, .xml or .mlpackage path")
    parser.add_argument(
        "--format", choices=("onnx", "openvino", "coreml"), default="onnx",
        help="onnx (checked with onnxruntime), openvino (IR, checked with OpenVINO) or coreml "
        "(an ML program for iOS / macOS, the authors' mobile route; converted and inspected here, "
        "running it needs macOS)",
    )  # fmt: skip
    runtime_arguments(parser)
    args = parser.parse_args(argv)
    if args.checkpoint:
        model = classifier_from_checkpoint(args.checkpoint, args.weights)
    else:
        task = {"num_classes": args.num_classes, "in_chans": args.in_chans}
        model = build_classifier(args.arch, task)
        if args.weights_file:
            state = convert_official_state_dict(load_weights_file(args.weights_file))
            load_state_dict_strict(model, state, args.weights_file)
    in_chans = getattr(model, "in_chans", args.in_chans)
    shape = (1, in_chans, args.img_size, args.img_size)
    if args.format == "coreml":
        info = export_coreml(model, args.out, torch.randn(shape), names=("image", "logits"))
        print(
            f"wrote {args.out}: input {info['input']}, output {info['output']}, ops {info['ops']}"
        )
        return
    if args.format == "openvino" or args.int8 or args.precision != "fp32":
        print_report(runtime_export(model, args, shape))
        return
    diff = export_classifier(model, args.out, shape)
    print(f"wrote {args.out}; onnxruntime vs PyTorch max |diff| = {diff:.2e}")


def runtime_export(model: nn.Module, args: argparse.Namespace, shape: tuple[int, ...]) -> dict:
    """A classifier (dynamic batch) or segmentation network (its logits at the input size) for
    ONNX Runtime / OpenVINO; the accuracy check runs the checkpoint's own test."""
    with torch.no_grad():
        dense = model.eval()(torch.zeros(shape)).dim() == 4
    if dense:
        modality_main = alias("segmentation")
        check = TaskCheck("test/mIoU", 0.01, True, ("image", "logits"),
                          {"image": {0: "batch"}, "logits": {0: "batch"}}, shape)  # fmt: skip
    else:
        modality_main = alias("vision")
        check = TaskCheck("test/acc1", 0.005, True, ("image", "logits"),
                          {"image": {0: "batch"}, "logits": {0: "batch"}}, shape)  # fmt: skip
    reader = None
    if args.calibration and args.checkpoint:
        reader = image_reader(modality_main, args.checkpoint, args.calibration)
    return export_for_runtime(model, args, check, checkpoint=args.checkpoint,
                              modality_main=modality_main, load_image=reader)  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
