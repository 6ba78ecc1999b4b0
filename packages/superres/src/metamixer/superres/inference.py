"""Super-resolution inference: whole images or overlapping tiles of bounded size, and metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def receptive_radius(model: nn.Module) -> int:
    """LR pixels on each side that influence one output pixel of a sequential conv network."""
    return sum(m.kernel_size[0] // 2 for m in model.modules() if isinstance(m, nn.Conv2d))


def _tile_weights(start: int, stop: int, core: tuple[int, int], blend: int) -> Tensor:
    """Weights along one axis of a tile covering ``[start, stop)``: 1 on the core, falling
    linearly to 0 over ``blend`` pixels outside it, 0 on the remaining context."""
    pos = torch.arange(start, stop, dtype=torch.float32)
    outside = torch.clamp(torch.maximum(core[0] - pos, pos - (core[1] - 1)), min=0)
    return torch.clamp(1 - outside / (blend + 1), min=0)


@torch.no_grad()
def upscale(
    model: nn.Module,
    lr: Tensor,
    scale: int,
    *,
    tile: int | None = None,
    overlap: int = 8,
    halo: int | None = None,
) -> Tensor:
    """Super-resolve ``lr (B, 3, H, W)``; with ``tile``, in tiles of ``tile`` LR pixels.

    Neighbouring tiles overlap by ``overlap`` pixels and are blended with linear ramps there;
    each tile also sees ``halo`` more pixels of context whose outputs are discarded.  With the
    default halo (the model's receptive radius) every kept output pixel saw its whole receptive
    field, so the result equals whole-image inference; a smaller halo is faster and the blending
    hides the seams.  Memory is bounded by the tile size, not the image size.
    """
    if tile is None or (lr.shape[-2] <= tile and lr.shape[-1] <= tile):
        return model(lr)
    if tile < 8:
        raise ValueError(f"tile must be at least 8 LR pixels, got {tile}")
    halo = receptive_radius(model) if halo is None else halo
    b, _, h, w = lr.shape
    out = lr.new_zeros(b, 3, h * scale, w * scale)
    weight = lr.new_zeros(1, 1, h * scale, w * scale)
    margin = overlap + halo
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y0, y1 = max(0, y - margin), min(h, y + tile + margin)
            x0, x1 = max(0, x - margin), min(w, x + tile + margin)
            sr = model(lr[..., y0:y1, x0:x1])
            # in HR pixels; image borders need no blending (nothing on the other side)
            core_y = (
                y * scale if y > 0 else 0,
                min(y + tile, h) * scale if y + tile < h else h * scale,
            )
            core_x = (
                x * scale if x > 0 else 0,
                min(x + tile, w) * scale if x + tile < w else w * scale,
            )
            wy = _tile_weights(y0 * scale, y1 * scale, core_y, overlap * scale)
            wx = _tile_weights(x0 * scale, x1 * scale, core_x, overlap * scale)
            mask = (wy[:, None] * wx[None, :]).to(lr)
            region = (..., slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
            out[region] += sr * mask
            weight[region] += mask
    return out / weight


def to_uint8(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` RGB in [0, 1] -> ``(H, W, 3)`` BGR uint8, the form basicsr's metrics expect."""
    array = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (array * 255.0).round().astype(np.uint8)[..., ::-1]


def psnr_ssim_y(sr: Tensor, hr: Tensor, crop_border: int) -> tuple[float, float]:
    """PSNR / SSIM on the Y channel after 8-bit quantisation (the published protocol), basicsr's."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    a, b = to_uint8(sr), to_uint8(hr)
    kw = dict(crop_border=crop_border, input_order="HWC", test_y_channel=True)
    return float(calculate_psnr(a, b, **kw)), float(calculate_ssim(a, b, **kw))
