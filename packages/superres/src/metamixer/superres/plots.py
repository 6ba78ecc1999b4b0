"""Side-by-side crops where people would rather look than read: LR-bicubic / FFNet-SR / HR."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .data import write_image


def comparison_strip(
    bicubic: Tensor, sr: Tensor, hr: Tensor, crop: int = 128, gap: int = 4
) -> Tensor:
    """A ``(3, crop, 3·crop + 2·gap)`` strip of the same crop (image centre, or the whole image if
    smaller) of the three ``(3, H, W)`` images."""
    h, w = hr.shape[-2:]
    c = min(crop, h, w)
    y, x = (h - c) // 2, (w - c) // 2
    parts = [img[:, y : y + c, x : x + c].clamp(0, 1) for img in (bicubic, sr, hr)]
    white = torch.ones(3, c, gap, dtype=hr.dtype, device=hr.device)
    return torch.cat([parts[0], white, parts[1], white, parts[2]], dim=-1)


def save_comparison(folder: Path, name: str, bicubic: Tensor, sr: Tensor, hr: Tensor) -> None:
    write_image(folder / f"{name}_sr.png", sr)
    write_image(folder / f"{name}_bicubic_ours_hr.png", comparison_strip(bicubic, sr, hr))
