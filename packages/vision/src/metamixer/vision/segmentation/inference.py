"""Segmentation inference on full images: rescaling, padding to the backbone stride, whole-image or
sliding-window prediction, optional multi-scale + flip averaging (mmseg's test-time protocol)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Network = Callable[[Tensor], Tensor]


def pad_to_multiple(images: Tensor, multiple: int = 32, minimum: int = 0) -> Tensor:
    """Zero-pad bottom/right so that H and W are multiples of ``multiple`` and ≥ ``minimum``."""
    h, w = images.shape[-2:]
    th = max(math.ceil(h / multiple) * multiple, minimum)
    tw = max(math.ceil(w / multiple) * multiple, minimum)
    return F.pad(images, [0, tw - w, 0, th - h])


def whole(network: Network, images: Tensor) -> Tensor:
    """Logits of the whole (padded) image, cropped back to its size."""
    h, w = images.shape[-2:]
    return network(pad_to_multiple(images))[..., :h, :w]


def slide(network: Network, images: Tensor, crop: int, stride: int) -> Tensor:
    """Logits averaged over ``crop``-sized windows every ``stride`` pixels (mmseg's slide mode)."""
    h, w = images.shape[-2:]
    padded = pad_to_multiple(images, 32, crop)
    ph, pw = padded.shape[-2:]
    logits = count = None
    for top in _starts(ph, crop, stride):
        for left in _starts(pw, crop, stride):
            window = network(padded[..., top : top + crop, left : left + crop])
            if logits is None or count is None:
                logits = window.new_zeros(*window.shape[:2], ph, pw)
                count = window.new_zeros(1, 1, ph, pw)
            logits[..., top : top + crop, left : left + crop] += window
            count[..., top : top + crop, left : left + crop] += 1
    assert logits is not None and count is not None  # _starts gives at least one window per axis
    return (logits / count)[..., :h, :w]


def _starts(size: int, crop: int, stride: int) -> list[int]:
    n = max(math.ceil((size - crop) / stride), 0) + 1
    return sorted({min(i * stride, size - crop) for i in range(n)})


def segment(
    network: Network,
    images: Tensor,
    *,
    mode: str = "whole",
    scale: int | None = None,
    ratios: Sequence[float] = (1.0,),
    flip: bool = False,
    crop: int = 512,
    stride: int = 341,
) -> Tensor:
    """Class probabilities ``(B, K, H, W)`` at the input size.

    Each ratio rescales the image so that its short side is ``scale × ratio`` (``None``: the input
    size × ratio); with ``flip`` the mirrored image is added; probabilities are averaged.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")
    h, w = images.shape[-2:]
    total = None
    for ratio in ratios:
        factor = ratio * (scale / min(h, w) if scale is not None else 1.0)
        size = (max(round(h * factor), 32), max(round(w * factor), 32))
        scaled = images if size == (h, w) else _resize(images, size)
        for mirrored in (False, True) if flip else (False,):
            x = scaled.flip(-1) if mirrored else scaled
            logits = whole(network, x) if mode == "whole" else slide(network, x, crop, stride)
            if mirrored:
                logits = logits.flip(-1)
            probs = _resize(logits, (h, w)).softmax(1)
            total = probs if total is None else total + probs
    if total is None:
        raise ValueError("ratios is empty: give at least one scale ratio")
    return total / (len(ratios) * (2 if flip else 1))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def confusion_metrics(confusion: Tensor) -> dict[str, Tensor]:
    """mmseg's metrics from a ``(K, K)`` confusion matrix (rows = truth): per-class IoU and
    accuracy (NaN for classes absent from truth and prediction), their means over the classes
    that occur (mIoU, mAcc) and the pixel accuracy (aAcc)."""
    confusion = confusion.double()
    hits = confusion.diag()
    truth, predicted = confusion.sum(1), confusion.sum(0)
    union = truth + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp_min(1), torch.nan)
    acc = torch.where(truth > 0, hits / truth.clamp_min(1), torch.nan)
    return {
        "mIoU": iou.nanmean(),
        "mAcc": acc.nanmean(),
        "aAcc": hits.sum() / confusion.sum().clamp_min(1),
        "IoU": iou,
        "Acc": acc,
    }
