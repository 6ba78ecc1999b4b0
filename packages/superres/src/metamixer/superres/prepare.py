"""Offline real data for super-resolution: the colour photos inside the scikit-image wheel.

    python -m metamixer.superres.prepare skimage --out data/superres/skimage

Writes ``train/HR`` (astronaut, coffee, hubble_deep_field, immunohistochemistry, retina,
motorcycle_left) and ``heldout/HR`` (chelsea, rocket) as PNG; the LR images are made by the data
module with MATLAB bicubic.  ``motorcycle_right`` (the other half of the stereo pair) is left out
so that no test scene is seen in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .data import write_image

TRAIN = (
    "astronaut",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
TEST = ("chelsea", "rocket")


def skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if name == "stereo_motorcycle":
        image = image[0]  # left view
    return image.astype(np.float32) / 255.0


def write_skimage(out: Path) -> list[Path]:
    written = []
    for split, names in (("train", TRAIN), ("heldout", TEST)):
        for name in names:
            stem = "motorcycle_left" if name == "stereo_motorcycle" else name
            written.append(write_image(out / split / "HR" / f"{stem}.png", skimage_photo(name)))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["skimage"])
    parser.add_argument("--out", default="data/superres/skimage")
    args = parser.parse_args(argv)
    files = write_skimage(Path(args.out))
    print(f"wrote {len(files)} images under {args.out}")


if __name__ == "__main__":
    main()
