"""Analysis figures for image models: ERF maps, coefficient sparsity, coefficient maps.

    python -m metamixer.vision.analyze erf --models ffnet_1 convnext_tiny --out figs/
    python -m metamixer.vision.analyze sparsity --models RUN/checkpoints/last.ckpt --out figs/
    python -m metamixer.vision.analyze coefmaps --models ffnet_1 --layer stages.2.blocks.0.token.mixer

A model is a timm name (optionally ``name=weights.pth``, a local file in the authors' or our
layout) or an ``ImageClassifier`` Lightning checkpoint (``.ckpt``).  Images are real photos:
scikit-image's colour photos (``--images skimage``, default), Fashion-MNIST's test set
(``--images fashion-mnist``) or a folder of image files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from metamixer.core.analysis import (
    coefficient_maps,
    coefficient_sparsity,
    effective_receptive_field,
    erf_area_ratios,
)
from metamixer.core.checkpoint import read_checkpoint
from metamixer.core.plots import plot_coefficient_maps, plot_erf, plot_sparsity

from . import models as _models  # noqa: F401  (registers FFNet)
from .data import FASHION_MNIST_ROOT, IMAGE_EXTENSIONS, read_idx
from .lit import classifier_from_checkpoint
from .weights import convert_official_state_dict, load_state_dict_strict, load_weights_file

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")  # fmt: skip
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def load_model(spec: str) -> nn.Module:
    """``name``, ``name=weights`` or a Lightning ``.ckpt`` -> eval-mode model."""
    if spec.endswith(".ckpt"):
        return classifier_from_checkpoint(spec).eval()
    name, _, weights = spec.partition("=")
    model = timm.create_model(name)
    if weights:
        load_state_dict_strict(
            model, convert_official_state_dict(load_weights_file(weights)), weights
        )
    return model.eval()


def load_images(source: str, size: int, channels: int, count: int) -> list[Tensor]:
    """``count`` normalised ``(1, channels, size, size)`` images from real data."""
    if source == "fashion-mnist":
        raw = read_idx(Path(FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz")[:count]
        arrays = [np.repeat(a[..., None], 3, 2) for a in raw]
    elif source == "skimage":
        from skimage import data

        arrays = [getattr(data, name)() for name in SKIMAGE_PHOTOS][:count]
    else:
        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"{source} holds no images")
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[:count]]
    images = []
    for a in arrays:
        rgb = np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3]
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 255
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        if channels == 1:
            images.append((x.mean(1, keepdim=True) - 0.2860) / 0.3530)
        else:
            images.append((x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1))
    return images


def in_chans(model: nn.Module) -> int:
    return getattr(model, "in_chans", 3)


def resolution(spec: str, size: int | None) -> int:
    """``--size`` if given, else what a checkpoint was trained at (its data module's
    ``img_size``, or Fashion-MNIST's padded 28), else 256."""
    if size is not None:
        return size
    if spec.endswith(".ckpt"):
        saved = read_checkpoint(spec).get("datamodule_hyper_parameters") or {}
        if "img_size" in saved:
            return int(saved["img_size"])
        if "pad" in saved:
            return 28 + 2 * int(saved["pad"])
    return 256


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["erf", "sparsity", "coefmaps"])
    parser.add_argument("--models", nargs="+", default=["ffnet_1", "convnext_tiny"])
    parser.add_argument("--images", default="skimage")
    parser.add_argument("--count", type=int, default=7, help="images to average over")
    parser.add_argument(
        "--size", type=int, help="input resolution (default: the checkpoint's, else 256)"
    )
    parser.add_argument("--layer", help="coefmaps: MetaMixer name (default: the middle one)")
    parser.add_argument("--top_k", type=int, default=4)
    parser.add_argument("--out", default="runs/analysis")
    args = parser.parse_args(argv)
    out = Path(args.out)
    models = {spec: load_model(spec) for spec in args.models}
    sizes = {spec: resolution(spec, args.size) for spec in args.models}
    for spec, model in models.items():
        print(f"{spec}: {in_chans(model)}-channel images at {sizes[spec]}×{sizes[spec]}")
    summary: dict = {}
    if args.command == "erf":
        maps, ratios = {}, {}
        for spec, model in models.items():
            images = load_images(args.images, sizes[spec], in_chans(model), args.count)
            maps[spec] = effective_receptive_field(model.forward_features, images)
            ratios[spec] = erf_area_ratios(maps[spec])
        summary = {k: {str(t): round(v, 4) for t, v in r.items()} for k, r in ratios.items()}
        print(plot_erf(maps, ratios, out / "erf.png"))
    elif args.command == "sparsity":
        for spec, model in models.items():
            images = load_images(args.images, sizes[spec], in_chans(model), args.count)
            rows = coefficient_sparsity(model, images)
            if not rows:
                raise SystemExit(f"{spec} has no MetaMixer layers to analyse")
            name = Path(spec).stem if spec.endswith(".ckpt") else spec.split("=")[0]
            summary[spec] = rows
            print(
                plot_sparsity(
                    rows, out / f"sparsity_{name}.png", title=f"coefficient sparsity: {name}"
                )
            )
    else:
        for spec, model in models.items():
            from metamixer.core.analysis import metamixers

            names = [n for n, m in metamixers(model) if m.mixes == "tokens"]
            layer = args.layer or names[len(names) // 2]
            image = load_images(args.images, sizes[spec], in_chans(model), 1)[0]
            maps, channels = coefficient_maps(model, image, layer, args.top_k)
            name = Path(spec).stem if spec.endswith(".ckpt") else spec.split("=")[0]
            path = out / f"coefmaps_{name}.png"
            print(
                plot_coefficient_maps(
                    image[0] * (STD.view(3, 1, 1) if image.shape[1] == 3 else 1),
                    maps,
                    channels,
                    path,
                    layer,
                )
            )
            summary[spec] = {"layer": layer, "channels": channels.tolist()}
    (out / f"{args.command}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
