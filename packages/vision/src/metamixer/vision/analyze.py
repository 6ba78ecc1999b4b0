"""Analysis figures for image models: ERF maps, coefficient sparsity, coefficient maps, per-class keys.

    python -m metamixer.vision.analyze erf --models RUN_A.ckpt RUN_B.ckpt --images fashion-mnist
    python -m metamixer.vision.analyze sparsity --models RUN/checkpoints/last.ckpt --out figs/
    python -m metamixer.vision.analyze sparsity --models poolformer_s12=poolformer_s12.pth
    python -m metamixer.vision.analyze coefmaps --models ffnet_1=ffnet_1.pth --layer stages.2.blocks.0.token.mixer
    python -m metamixer.vision.analyze keys --models RUN/checkpoints/last.ckpt --images fashion-mnist
    python -m metamixer.vision.analyze erf --models ffnet_1 convnext_tiny --residual_scale 1

A model is a registered architecture or timm name (optionally ``name=weights.pth`` or
``name=model.safetensors``, a local file:
the FFNet authors' release, timm's layout for ``poolformer_s12`` and timm's own models, or ours)
or an ``ImageClassifier`` Lightning checkpoint (``.ckpt``).  ``poolformer_s12`` is the PoolFormer
built from ``metamixer.core``'s pooling mixer (``metamixer.vision.models.PoolFormer``), which takes
timm's ``poolformer_s12`` weights.  Images are real photos: scikit-image's colour photos
(``--images skimage``, default), Fashion-MNIST's test set (``--images fashion-mnist``, padded as in
training) or a folder of image files (for ``keys``: a folder of class folders).

Every figure and JSON entry names the provenance of its weights: ``untrained (initialisation)``,
``trained here: <checkpoint> (step N)`` or ``weights: <file>``.  Untrained networks whose residual
branches start at different scales (timm's ConvNeXt: layer-scale 1e-6, every block close to the
identity; FFNet-1: none, i.e. 1) are refused: ``--residual_scale V`` sets every layer-scale of the
untrained models to ``V`` (``1``: plain residuals, as a network without layer-scale), or
``--allow_unequal_residual_scales`` goes on and says so in the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from metamixer.core import ARCHITECTURES, build_network
from metamixer.core.checkpoint import read_checkpoint
from metamixer.lab.analysis import (
    coefficient_maps,
    coefficient_sparsity,
    effective_receptive_field,
    erf_area_ratios,
    key_statistics,
    metamixers,
    residual_scale,
    residual_scale_parameters,
    set_residual_scales,
    unequal_residual_scales,
)
from metamixer.lab.plots import (
    plot_coefficient_maps,
    plot_erf,
    plot_key_statistics,
    plot_sparsity,
    plot_sparsity_models,
)
from metamixer.vision import models as _models  # noqa: F401  (registers FFNet and PoolFormer)
from metamixer.vision.backbone import classifier_from_checkpoint
from metamixer.vision.classification.data import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, read_idx
from metamixer.vision.images import IMAGE_EXTENSIONS
from metamixer.vision.models import PoolFormer
from metamixer.vision.models.ffnet_weights import convert_official_state_dict
from metamixer.vision.models.poolformer_weights import convert_timm_poolformer_state_dict
from metamixer.vision.models.state_dicts import load_state_dict_strict, load_weights_any

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")  # fmt: skip
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
GREY_MEAN, GREY_STD = 0.2860, 0.3530  # Fashion-MNIST's, as in training
UNTRAINED = "untrained (initialisation)"


@dataclass
class Loaded:
    """A model to analyse and where its weights come from."""

    spec: str
    model: nn.Module
    weights: str  # provenance label for figures and JSON
    trained: bool

    name: str = ""  # for file names and legends (``short_name`` of the spec by default)

    def __post_init__(self) -> None:
        self.name = self.name or short_name(self.spec)


def short_name(spec: str) -> str:
    """A checkpoint's experiment (``runs/<modality>/<experiment>/<run>/checkpoints/last.ckpt``;
    a file other than ``last`` adds its stem) or its stem; the architecture of a name."""
    if spec.endswith(".ckpt"):
        path = Path(spec)
        if path.parent.name != "checkpoints" or len(path.parents) < 3:
            return path.stem
        experiment = path.parents[2].name
        return experiment if path.stem == "last" else f"{experiment}_{path.stem}"
    return spec.split("=")[0]


def _build(name: str, overrides: dict | None = None) -> nn.Module:
    """A registered architecture (ours first: ``poolformer_s12`` is the core PoolFormer) or a timm
    model, untrained; nothing is downloaded."""
    if name in ARCHITECTURES:
        return build_network(name, None, overrides)
    return timm.create_model(name, pretrained=False, **(overrides or {}))


def _convert(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A weight file's state dict in ``model``'s layout."""
    if set(state) == set(model.state_dict()):
        return state
    if isinstance(model, PoolFormer):
        return convert_timm_poolformer_state_dict(state)
    if type(model).__module__.startswith("metamixer."):
        return convert_official_state_dict(state)
    # a timm model: its family's own converter of the original release layout, where it has one
    family = sys.modules.get(type(model).__module__)
    convert = getattr(family, "checkpoint_filter_fn", None)
    return convert(state, model) if convert is not None else state


def load(spec: str, residual_scale_value: float | None = None) -> Loaded:
    """``name``, ``name=weights`` or a Lightning ``.ckpt`` -> eval-mode model and its provenance.

    ``residual_scale_value`` (untrained models only): every layer-scale set to it; a registered
    architecture with a ``layer_scale`` argument is built with it, so that one without
    layer-scales gets them."""
    if spec.endswith(".ckpt"):
        checkpoint = read_checkpoint(spec)
        step = int(checkpoint.get("global_step", -1))
        model = classifier_from_checkpoint(spec).eval()
        if step == 0:
            return Loaded(spec, model, f"{UNTRAINED}: {spec} (step 0)", False)
        where = f" (step {step})" if step > 0 else ""
        return Loaded(spec, model, f"trained here: {spec}{where}", True)
    name, _, weights = spec.partition("=")
    if weights:
        model = _build(name)
        load_state_dict_strict(model, _convert(model, load_weights_any(weights)), weights)
        return Loaded(spec, model.eval(), f"weights: {weights}", True)
    overrides = None
    if (
        residual_scale_value is not None
        and name in ARCHITECTURES
        and "layer_scale" in ARCHITECTURES[name].parameters()
    ):
        overrides = {"layer_scale": residual_scale_value}
    model = _build(name, overrides)
    label = UNTRAINED
    if residual_scale_value is not None:
        set_residual_scales(model, residual_scale_value)
        if not residual_scale_parameters(model) and residual_scale_value != 1.0:
            raise SystemExit(
                f"{name} has no layer-scales, so its residual branches stay at scale 1; "
                f"--residual_scale {residual_scale_value} cannot equalise it (use 1)"
            )
        label += f", layer-scales set to {residual_scale_value:g}"
    return Loaded(spec, model.eval(), label, False)


def load_model(spec: str) -> nn.Module:
    """``name``, ``name=weights`` or a Lightning ``.ckpt`` -> eval-mode model."""
    return load(spec).model


def check_residual_scales(models: list[Loaded], allow: bool) -> str | None:
    """Refuse (or, with ``allow``, describe) a comparison of untrained models whose residual
    branches start at scales more than 10× apart; returns a note for the figure, or ``None``."""
    untrained = {m.spec: residual_scale(m.model) for m in models if not m.trained}
    if len(untrained) < 2 or not unequal_residual_scales(untrained):
        return None
    listed = ", ".join(f"{k}: {v:g}" for k, v in untrained.items())
    if not allow:
        raise SystemExit(
            f"untrained models with unequal residual scales ({listed}): a block with layer-scale "
            "1e-6 is close to the identity at initialisation, so the comparison would show the "
            "scales, not the architectures.  Use --residual_scale 1 (every layer-scale set to 1) "
            "or trained weights; --allow_unequal_residual_scales draws it anyway, labelled."
        )
    return f"UNEQUAL residual scales at initialisation ({listed})"


def _fashion_mnist(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    root = Path(FASHION_MNIST_ROOT)
    return read_idx(root / f"{split}-images-idx3-ubyte.gz"), read_idx(
        root / f"{split}-labels-idx1-ubyte.gz"
    )


def _to_input(a: np.ndarray, size: int, channels: int, pad_grey: bool = False) -> Tensor:
    """One uint8 image (H, W) or (H, W, 3+) -> a normalised ``(1, channels, size, size)`` tensor.

    ``pad_grey``: a grey image smaller than ``size`` by an even margin is padded (with black, as
    the Fashion-MNIST data module pads 28 to 32) instead of resized."""
    grey = a.ndim == 2
    rgb = np.repeat(a[..., None], 3, 2) if grey else a[..., :3]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 255
    margin = size - x.shape[-1]
    if pad_grey and grey and x.shape[-1] == x.shape[-2] and margin >= 0 and margin % 2 == 0:
        x = F.pad(x, [margin // 2] * 4, value=0.0)
    else:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    if channels == 1:
        return (x.mean(1, keepdim=True) - GREY_MEAN) / GREY_STD
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def load_images(source: str, size: int, channels: int, count: int) -> list[Tensor]:
    """``count`` normalised ``(1, channels, size, size)`` images from real data."""
    if source == "fashion-mnist":
        arrays = list(_fashion_mnist()[0][:count])
    elif source == "skimage":
        from skimage import data

        arrays = [getattr(data, name)() for name in SKIMAGE_PHOTOS][:count]
    else:
        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"{source} holds no images")
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[:count]]
    return [_to_input(a, size, channels, pad_grey=source == "fashion-mnist") for a in arrays]


def load_labelled_images(
    source: str, size: int, channels: int, per_class: int
) -> tuple[Tensor, Tensor, list[str]]:
    """Up to ``per_class`` images of every class: Fashion-MNIST's test set, or a folder holding one
    folder of images per class.  Returns images ``(N, C, size, size)``, labels ``(N,)`` and the
    class names."""
    arrays, labels = [], []
    if source == "fashion-mnist":
        images, targets = _fashion_mnist()
        names = list(FASHION_MNIST_CLASSES)
        for c in range(len(names)):
            picked = np.flatnonzero(targets == c)[:per_class]
            arrays += list(images[picked])
            labels += [c] * len(picked)
    elif source != "skimage" and Path(source).is_dir():
        folders = sorted(p for p in Path(source).iterdir() if p.is_dir())
        names = [p.name for p in folders]
        for c, folder in enumerate(folders):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            arrays += [np.asarray(Image.open(f).convert("RGB")) for f in files[:per_class]]
            labels += [c] * len(files[:per_class])
    else:
        raise ValueError(
            f"per-class statistics need labelled images: --images fashion-mnist or a folder of "
            f"class folders, not {source!r}"
        )
    if not arrays:
        raise ValueError(f"{source} holds no labelled images")
    x = torch.cat(
        [_to_input(a, size, channels, pad_grey=source == "fashion-mnist") for a in arrays]
    )
    return x, torch.tensor(labels), names


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


def _key_row_json(row: dict, class_names: list[str]) -> dict:
    fires = row["fires"]
    return {
        "layer": row["layer"],
        "depth": row["depth"],
        "mixes": row["mixes"],
        "keys": row["keys"],
        "active": row["active"],
        "shared_half": round(row["shared_half"], 4),
        "shared_all": round(row["shared_all"], 4),
        "specific": round(row["specific"], 4),
        "keys_per_class": {
            class_names[c]: fires[i].nonzero().flatten().tolist()
            for i, c in enumerate(row["classes_seen"])
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["erf", "sparsity", "coefmaps", "keys"])
    parser.add_argument("--models", nargs="+", default=["ffnet_1", "convnext_tiny"])
    parser.add_argument("--images", default="skimage")
    parser.add_argument(
        "--count", type=int, default=7, help="images to average over (keys: per class)"
    )
    parser.add_argument(
        "--size", type=int, help="input resolution (default: the checkpoint's, else 256)"
    )
    parser.add_argument(
        "--layer", help="coefmaps: MetaMixer name (default: the middle one); keys: the heat map's"
    )
    parser.add_argument("--top_k", type=int, default=4)
    parser.add_argument(
        "--top_share",
        type=float,
        default=0.1,
        help="keys: a key fires for a class when it is among the top share of keys by the "
        "class's mean activation (default 0.1)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="keys: a key fires for a class when its class-mean activation exceeds this instead",
    )
    parser.add_argument(
        "--residual_scale",
        type=float,
        help="untrained models: set every layer-scale to this value (1 = plain residuals), so "
        "networks that start at different scales are compared at equal ones",
    )
    parser.add_argument(
        "--allow_unequal_residual_scales",
        action="store_true",
        help="compare untrained models with unequal residual scales anyway (labelled)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of untrained models' initialisation"
    )
    parser.add_argument("--out", default="runs/analysis")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    models = [load(spec, args.residual_scale) for spec in args.models]
    names = [m.name for m in models]
    for i, m in enumerate(models):  # two runs of one experiment: numbered
        if names.count(m.name) > 1:
            m.name = f"{m.name}_{i}"
    note = check_residual_scales(models, args.allow_unequal_residual_scales)
    if note is None and models and not any(m.trained for m in models):
        note = "untrained networks at initialisation: architecture only, not what training learns"
    elif note is None and len({m.trained for m in models}) > 1:
        note = "mixes trained and untrained networks"
    sizes = {m.spec: resolution(m.spec, args.size) for m in models}
    for m in models:
        size = sizes[m.spec]
        print(f"{m.spec}: {in_chans(m.model)}-channel images at {size}×{size}; {m.weights}")
    if note:
        print(f"note: {note}")
    summary: dict = {}
    if args.command == "erf":
        maps, ratios = {}, {}
        for m in models:
            images = load_images(args.images, sizes[m.spec], in_chans(m.model), args.count)
            features = cast(Callable[[Tensor], Tensor], m.model.forward_features)
            maps[m.spec] = effective_receptive_field(features, images)
            ratios[m.spec] = erf_area_ratios(maps[m.spec])
            summary[m.spec] = {str(t): round(v, 4) for t, v in ratios[m.spec].items()}
            summary[m.spec]["weights"] = m.weights
        print(
            plot_erf(
                {m.name: maps[m.spec] for m in models},
                {m.name: ratios[m.spec] for m in models},
                out / "erf.png",
                {m.name: m.weights for m in models},
                note,
            )
        )
    elif args.command == "sparsity":
        for m in models:
            images = load_images(args.images, sizes[m.spec], in_chans(m.model), args.count)
            rows = coefficient_sparsity(m.model, images)
            if not rows:
                raise SystemExit(f"{m.spec} has no gated MetaMixer layers to analyse")
            summary[m.spec] = [{**r, "weights": m.weights} for r in rows]
            print(
                plot_sparsity(
                    rows,
                    out / f"sparsity_{m.name}.png",
                    title=f"coefficient sparsity: {m.name}",
                    weights=m.weights,
                )
            )
        if len(models) > 1:
            title = "coefficient sparsity" + (f"\n{note}" if note else "")
            print(
                plot_sparsity_models(
                    {m.name: summary[m.spec] for m in models},
                    out / "sparsity.png",
                    title,
                    {m.name: m.weights for m in models},
                )
            )
    elif args.command == "coefmaps":
        for m in models:
            names = [n for n, mixer in metamixers(m.model) if mixer.mixes == "tokens"]
            if not names and args.layer is None:
                raise SystemExit(f"{m.spec} has no token MetaMixer; name one with --layer")
            layer = args.layer or names[len(names) // 2]
            image = load_images(args.images, sizes[m.spec], in_chans(m.model), 1)[0]
            coef_maps, channels = coefficient_maps(m.model, image, layer, args.top_k)
            print(
                plot_coefficient_maps(
                    image[0] * (STD.view(3, 1, 1) if image.shape[1] == 3 else 1),
                    coef_maps,
                    channels,
                    out / f"coefmaps_{m.name}.png",
                    layer,
                    weights=m.weights,
                )
            )
            summary[m.spec] = {"layer": layer, "channels": channels.tolist(), "weights": m.weights}
    else:
        for m in models:
            x, y, names = load_labelled_images(
                args.images, sizes[m.spec], in_chans(m.model), args.count
            )
            batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]
            rows = key_statistics(
                m.model,
                batches,
                len(names),
                threshold=args.threshold,
                top_share=args.top_share,
            )
            rule = (
                f"class-mean activation > {args.threshold:g}"
                if args.threshold is not None
                else f"top {args.top_share:.0%} of keys by class-mean activation"
            )
            summary[m.spec] = {
                "weights": m.weights,
                "fires": rule,
                "images_per_class": args.count,
                "layers": [_key_row_json(r, names) for r in rows],
            }
            layer = args.layer if args.layer in {r["layer"] for r in rows} else None
            print(
                plot_key_statistics(
                    rows,
                    out / f"keys_{m.name}.png",
                    names,
                    layer,
                    title=f"per-class keys of {m.name} (fires: {rule})",
                    weights=m.weights,
                )
            )
            for r in rows:
                print(
                    f"  {r['layer']:<40} keys {r['keys']:4d} active {r['active']:4d}  "
                    f"shared by all {r['shared_all']:.3f}  by ≥half {r['shared_half']:.3f}  "
                    f"one class {r['specific']:.3f}"
                )
    if note:  # in every entry, so that each stays self-describing
        for entry in summary.values():
            for item in entry if isinstance(entry, list) else [entry]:
                item["note"] = note
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.command}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
