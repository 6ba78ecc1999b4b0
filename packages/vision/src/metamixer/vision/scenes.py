"""Composed scenes: real Fashion-MNIST items pasted on real photographs, with exact labels.

    python -m metamixer.vision.scenes --out data/vision/scenes

No labelled segmentation or detection set ships offline, so this builds one from two real sources
that do: Fashion-MNIST items (Debian ``dataset-fashion-mnist``) are scaled, tinted and pasted at
random positions on random crops of scikit-image's photos.  Each item's mask is exact (its
pixels above an intensity threshold; later items occlude earlier ones).  Written twice, in the two
standard layouts, so the same loaders that read ADE20K and COCO read it:

- ``ADEChallengeData2016/{images,annotations}/{training,validation}``: JPEG images, PNG labels
  with 0 = unlabelled (the faint rim around each item, ignored like ADE20K's 0), 1 = photo
  background, 2…11 = the ten item classes; ``objectInfo150.txt`` names them.
- ``coco/{train2017,val2017}`` + ``coco/annotations/instances_{train,val}2017.json``: one
  instance per visible item, its mask as RLE (``iscrowd`` 0), its box from the visible mask.

Training scenes use Fashion-MNIST's training items on sixteen photos (six colour, ten grey with a
random tint); validation scenes its test items on two other colour photos (no item or background
is shared).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from metamixer.vision.classification.data import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, read_idx

#: training backgrounds: six colour photos and ten grey ones (tinted at random when used)
TRAIN_PHOTOS = (
    "astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
    "stereo_motorcycle", "brick", "camera", "cell", "clock", "coins", "grass", "gravel", "moon",
    "page", "text",
)  # fmt: skip
VAL_PHOTOS = ("chelsea", "rocket")  # never seen in training (``cat`` is chelsea: left out)
SPLITS = {"train": ("training", "train2017"), "val": ("validation", "val2017")}
#: item pixels at or above this intensity are the object, fainter non-zero ones its ignored rim
OBJECT, RIM = 0.25, 0.04
MIN_VISIBLE = 64  # pixels: an item occluded below this is dropped from the labels


def photo(name: str) -> np.ndarray:
    """A uint8 photo from inside the scikit-image wheel (no download): RGB, or grey (H, W)."""
    from skimage import data

    image = getattr(data, name)()
    return image[0] if name == "stereo_motorcycle" else image


def background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop of a random photo, resized to ``size``, randomly flipped; a grey
    photo gets a random colour tint."""
    image = photos[rng.integers(len(photos))]
    h, w = image.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(image[y : y + side, x : x + side]).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    out = np.asarray(crop, dtype=np.float32)
    if out.ndim == 2:
        out = out[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def compose(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    items: np.ndarray,
    labels: np.ndarray,
    size: int,
    max_items: int,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """One scene: ``(image uint8 (H, W, 3), ADE label map uint8, [(class index, mask)])``."""
    image = background(rng, photos, size)
    label = np.ones((size, size), np.uint8)  # 1 = background
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_items + 1))):
        k = int(rng.integers(len(items)))
        side = int(rng.integers(size // 6, size // 2 + 1))
        item = Image.fromarray(items[k]).resize((side, side), Image.Resampling.BILINEAR)
        alpha = np.asarray(item, np.float32) / 255.0
        y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
        tint = rng.uniform(40, 255, 3).astype(np.float32)
        region = image[y : y + side, x : x + side]
        texture = alpha[..., None] * tint
        a = np.clip(alpha / OBJECT, 0, 1)[..., None]  # opaque inside the object, soft at its rim
        region[:] = a * texture + (1 - a) * region
        obj = np.zeros((size, size), bool)
        obj[y : y + side, x : x + side] = alpha >= OBJECT
        rim = np.zeros((size, size), bool)
        rim[y : y + side, x : x + side] = (alpha > RIM) & (alpha < OBJECT)
        for _, mask in placed:
            mask &= ~(obj | rim)
        label[rim] = 0
        label[obj] = 2 + int(labels[k])
        placed.append((int(labels[k]), obj))
    for _, mask in placed:
        if mask.sum() < MIN_VISIBLE:  # almost hidden: unlabelled in both layouts
            label[mask] = 0
    placed = [(c, m) for c, m in placed if m.sum() >= MIN_VISIBLE]
    return np.clip(image, 0, 255).astype(np.uint8), label, placed


def coco_annotation(mask: np.ndarray, category: int, image_id: int, ann_id: int) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category + 1,
        "segmentation": rle,
        "area": int(mask.sum()),
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "iscrowd": 0,
    }


def write_scenes(
    out: Path,
    *,
    train: int = 600,
    val: int = 100,
    size: int = 256,
    max_items: int = 4,
    seed: int = 0,
    fashion_mnist: str = FASHION_MNIST_ROOT,
) -> dict[str, int]:
    """Write both layouts under ``out``; returns the number of scenes per split."""
    root = Path(fashion_mnist)
    sources = {
        "train": ("train", TRAIN_PHOTOS, train),
        "val": ("t10k", VAL_PHOTOS, val),
    }
    ade = out / "ADEChallengeData2016"
    names = ["unlabelled-rim", "background", *FASHION_MNIST_CLASSES]
    ade.mkdir(parents=True, exist_ok=True)
    (ade / "objectInfo150.txt").write_text(
        "Idx\tName\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names) if i > 0)
    )
    categories = [
        {"id": i + 1, "name": n, "supercategory": "fashion"}
        for i, n in enumerate(FASHION_MNIST_CLASSES)
    ]
    counts = {}
    for split, (prefix, photo_names, n) in sources.items():
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        items = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        photos = [photo(p) for p in photo_names]
        ade_split, coco_split = SPLITS[split]
        for folder in (ade / "images" / ade_split, ade / "annotations" / ade_split):
            folder.mkdir(parents=True, exist_ok=True)
        (out / "coco" / coco_split).mkdir(parents=True, exist_ok=True)
        images: list[dict] = []
        annotations: list[dict] = []
        for i in range(1, n + 1):
            image, label, placed = compose(rng, photos, items, labels, size, max_items)
            stem = f"ADE_{split}_{i:08d}"
            Image.fromarray(image).save(ade / "images" / ade_split / f"{stem}.jpg", quality=95)
            Image.fromarray(label).save(ade / "annotations" / ade_split / f"{stem}.png")
            file_name = f"{i:012d}.jpg"
            Image.fromarray(image).save(out / "coco" / coco_split / file_name, quality=95)
            images.append({"id": i, "file_name": file_name, "height": size, "width": size})
            for category, mask in placed:
                annotations.append(coco_annotation(mask, category, i, len(annotations) + 1))
        (out / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        with open(out / "coco" / "annotations" / f"instances_{coco_split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        counts[split] = n
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/vision/scenes")
    parser.add_argument("--train", type=int, default=600, help="training scenes")
    parser.add_argument("--val", type=int, default=100, help="validation scenes")
    parser.add_argument("--size", type=int, default=256, help="scene side in pixels")
    parser.add_argument("--max-items", type=int, default=4, help="items per scene, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fashion-mnist", default=FASHION_MNIST_ROOT, help="idx files folder")
    args = parser.parse_args(argv)
    counts = write_scenes(
        Path(args.out), train=args.train, val=args.val, size=args.size,
        max_items=args.max_items, seed=args.seed, fashion_mnist=args.fashion_mnist,
    )  # fmt: skip
    print(f"wrote {counts} scenes under {args.out} (ADE20K and COCO layouts)")


if __name__ == "__main__":
    main()
