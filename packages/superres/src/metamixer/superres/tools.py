"""Command-line tools: benchmark evaluation, folder prediction and ONNX export.

    python -m metamixer.superres.tools evaluate --checkpoint CKPT --benchmark_root B --datasets Set5 Set14
    python -m metamixer.superres.tools predict --checkpoint CKPT --input photos/ --output sr/ --tile 256
    python -m metamixer.superres.tools export --checkpoint CKPT --out ffnet_sr.onnx
    python -m metamixer.superres.tools export --checkpoint CKPT --format openvino --out sr.xml \
        --int8 --calibration data/superres/skimage/train   # + sr.calibration.json, sr.accuracy.json

``--checkpoint`` is a Lightning checkpoint of ``SuperResolution`` (architecture read from it) or an
authors' basicsr release (then give ``--arch`` and ``--scale``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metamixer.core import build_network, deploy, network_from_checkpoint
from metamixer.core.checkpoint import export_onnx, read_checkpoint
from metamixer.lab.inputs import input_files_loader
from metamixer.lab.main import alias
from metamixer.lab.runtime_export import (
    TaskCheck,
    export_for_runtime,
    print_report,
    runtime_arguments,
)
from metamixer.superres.writer import sr_name

from .data import (
    IMAGE_EXTENSIONS,
    PairedImages,
    bicubic_downscale,
    ensure_lr,
    image_tensor,
    read_image,
    to_tensor,
    write_image,
)
from .inference import psnr_ssim_y, upscale
from .models import VARIANTS, FFNetSR
from .plots import save_comparison
from .weights import load_sr_weights


def load_model(checkpoint: str, arch: str | None = None, scale: int | None = None) -> FFNetSR:
    """FFNet-SR from a Lightning checkpoint (architecture inside) or a basicsr release file."""
    path = Path(checkpoint)
    if isinstance(read_checkpoint(path).get("hyper_parameters"), dict):
        return cast(FFNetSR, network_from_checkpoint(path))
    if arch not in VARIANTS or scale is None:
        raise ValueError(
            f"{path} is a plain weights file: give --arch ({', '.join(VARIANTS)}) and --scale"
        )
    return cast(FFNetSR, load_sr_weights(build_network(arch, {"scale": scale}), path).eval())


def evaluate(
    model: nn.Module, roots: list[Path], scale: int, *, tile: int | None, save: Path | None
) -> list[tuple[str, float, float, float, float]]:
    """Mean PSNR / SSIM (Y, border = scale) of the model and of bicubic per benchmark folder."""
    rows = []
    for root in roots:
        ensure_lr(root, scale)
        data = PairedImages(root, scale)
        scores = []
        for i in range(len(data)):
            item = data[i]
            lr, hr = item["lr"][None], item["hr"]
            sr = upscale(model, lr, scale, tile=tile)[0].clamp(0, 1)
            bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)[
                0
            ].clamp(0, 1)
            scores.append((*psnr_ssim_y(sr, hr, scale), *psnr_ssim_y(bicubic, hr, scale)))
            if save is not None:
                save_comparison(save / root.name, item["name"], bicubic, sr, hr)
        rows.append((root.name, *np.mean(scores, axis=0).tolist()))
    return rows


def predict_folder(
    model: nn.Module, src: Path, dst: Path, scale: int, tile: int | None
) -> tuple[list[Path], list[str]]:
    """Upscale one image or every image under a folder; unreadable files are skipped (with a
    warning) and returned by name, never fatal."""
    out, unreadable = [], []
    for batch in input_files_loader(str(src), IMAGE_EXTENSIONS, image_tensor):
        unreadable += batch["unreadable"]
        if batch["name"]:
            with torch.inference_mode():
                sr = upscale(model, batch["input"], scale, tile=tile)[0]
            out.append(write_image(dst / sr_name(batch["name"][0], scale), sr))
    return out, unreadable


def export_sr(model: nn.Module, path: Path, atol: float = 1e-4) -> float:
    """Fold and export with dynamic image size; onnxruntime checked against PyTorch."""
    axes = {"lr": {0: "b", 2: "h", 3: "w"}, "sr": {0: "b", 2: "H", 3: "W"}}
    return export_onnx(
        model, path, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 56), names=("lr", "sr"),
        dynamic_axes=axes, atol=atol,
    )  # fmt: skip


def calibration_reader(scale: int, size: int = 64) -> Callable[[Path], Tensor]:
    """An HR training photo -> its bicubic LR image cut into ``size``² patches ``(N, 3, s, s)``
    (the network's inputs during calibration)."""

    def load(path: Path) -> Tensor:
        lr = to_tensor(bicubic_downscale(read_image(path), scale))
        patches = lr.unfold(1, size, size).unfold(2, size, size)  # 3, rows, cols, size, size
        if patches.numel() == 0:
            raise ValueError(f"{path} is smaller than one {size}² LR patch")
        return patches.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)

    return load


def export_runtime(model: FFNetSR, args: argparse.Namespace) -> dict:
    """ONNX Runtime / OpenVINO (fp32, bf16, int8) with dynamic image size; accuracy = the
    checkpoint's test PSNR (its held-out photos)."""
    modality_main = alias("superres")
    axes = {"lr": {0: "b", 2: "h", 3: "w"}, "sr": {0: "b", 2: "H", 3: "W"}}
    # int8 defaults by measurement on the held-out photos: ORT's QDQ loses 0.15 dB (0.09 with the
    # depthwise convs in float), NNCF's (bias-corrected) 0.015 dB; ORT does not fuse NNCF's QDQ
    defaults = {"onnx": ("ort", "dense"), "openvino": ("nncf", "weighted")}
    check = TaskCheck("/psnr", 0.1, True, ("lr", "sr"), axes, (1, 3, 32, 32), defaults)
    return export_for_runtime(model, args, check, checkpoint=args.checkpoint,
                              modality_main=modality_main,
                              load_image=calibration_reader(model.scale, args.calibration_patch))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FFNet-SR tools (see module docstring)")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True)
    common.add_argument("--arch", choices=sorted(VARIANTS), help="for basicsr release files")
    common.add_argument("--scale", type=int, help="for basicsr release files")
    common.add_argument("--tile", type=int, help="LR tile size (default: whole images)")
    common.add_argument(
        "--target", default="cpu", choices=["cpu", "cuda", "portable"],
        help="deployment recipe for evaluate / predict (metamixer.core.deploy; export folds only)",
    )  # fmt: skip
    ev = sub.add_parser("evaluate", parents=[common], help="PSNR/SSIM on benchmark folders")
    ev.add_argument("--benchmark_root", required=True)
    ev.add_argument(
        "--datasets", nargs="+", default=["Set5", "Set14", "B100", "Urban100", "Manga109"]
    )
    ev.add_argument("--save_images", help="folder for SR images and comparison crops")
    pr = sub.add_parser("predict", parents=[common], help="upscale a folder of images")
    pr.add_argument("--input", required=True)
    pr.add_argument("--output", required=True)
    ex = sub.add_parser("export", parents=[common], help="ONNX / OpenVINO export (checked)")
    ex.add_argument("--out", required=True)
    ex.add_argument("--format", choices=("onnx", "openvino"), default="onnx")
    runtime_arguments(ex)
    ex.add_argument("--calibration-patch", type=int, default=64,
                    help="LR patch size the calibration photos are cut into")  # fmt: skip
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint, args.arch, args.scale)
    if args.command != "export":
        deploy(model, args.target)  # in place
    if args.command == "evaluate":
        roots = [Path(args.benchmark_root) / d for d in args.datasets]
        save = Path(args.save_images) if args.save_images else None
        rows = evaluate(model, roots, model.scale, tile=args.tile, save=save)
        print(f"| dataset (×{model.scale}) | PSNR | SSIM | bicubic PSNR | bicubic SSIM |")
        print("|---|---|---|---|---|")
        for name, psnr, ssim, bpsnr, bssim in rows:
            print(f"| {name} | {psnr:.2f} | {ssim:.4f} | {bpsnr:.2f} | {bssim:.4f} |")
    elif args.command == "predict":
        files, unreadable = predict_folder(
            model, Path(args.input), Path(args.output), model.scale, args.tile
        )
        print(f"wrote {len(files)} images to {args.output}")
        if unreadable:
            print(f"skipped {len(unreadable)} unreadable files: {', '.join(unreadable)}")
    elif args.format == "openvino" or args.int8 or args.precision != "fp32":
        print_report(export_runtime(model, args))
    else:
        print(
            f"wrote {args.out}; max |onnxruntime - PyTorch| = {export_sr(model, Path(args.out)):.2e}"
        )


def evaluate_main(argv: list[str]) -> None:
    """``metamixer superres evaluate …``."""
    main(["evaluate", *argv])


def upscale_main(argv: list[str]) -> None:
    """``metamixer superres upscale …`` (a Lightning checkpoint or the authors' release file)."""
    main(["predict", *argv])


def export_main(argv: list[str]) -> None:
    """``metamixer superres export …``."""
    main(["export", *argv])


if __name__ == "__main__":
    main()
