"""Reading images for every vision task: the file types and one opener with a clear error."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def open_image(path: Path) -> Image.Image:
    """A fully decoded image (a truncated file fails here, not later)."""
    with Image.open(path) as img:
        img.load()
        return img.copy()
