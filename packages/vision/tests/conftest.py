import gzip
import struct

import numpy as np
import pytest
from PIL import Image


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_root(tmp_path):
    """Fashion-MNIST idx files (random pixels, the real format) in a temporary folder."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 40)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return tmp_path


@pytest.fixture
def image_folder(tmp_path):
    """ImageNet layout with 3 classes, varied sizes and modes, and one corrupt file."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("validation", 2)):
        for c in ("cat", "dog", "fish"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                mode = "L" if i == 1 else "RGB"
                Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return tmp_path
