"""timm's classifier interface and the input check, shared by the image networks built here
(FFNet, PoolFormer, FFNet-seg)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn


class TimmClassifier:
    """``get_classifier`` / ``reset_classifier`` and ``forward = forward_head ∘ forward_features``
    over a model's ``head``, ``global_pool`` and ``num_features``."""

    head: nn.Module
    head_drop: nn.Module
    global_pool: nn.Module
    num_features: int
    head_hidden_size: int
    num_classes: int

    def init_head(
        self, num_features: int, num_classes: int, *, drop_rate: float, global_pool: str
    ) -> None:
        """The head over ``num_features`` channels: ``global_pool``, dropout, a linear layer."""
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


def stage_count(depths: Sequence[int], dims: Sequence[int]) -> int:
    """The number of stages, which ``depths`` and ``dims`` must agree on."""
    if len(dims) != len(depths):
        raise ValueError(f"depths ({len(depths)} stages) and dims ({len(dims)}) must match")
    return len(depths)


def check_images(x: Tensor, in_chans: int, model: str, *, min_size: int = 0) -> None:
    """A ValueError naming ``model`` unless ``x`` is a ``(batch, in_chans, height, width)`` batch
    with height and width at least ``min_size`` (the network's downsampling factor)."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"{model} expects images of shape (batch, {in_chans}, height, width), got "
            f"{tuple(x.shape)}; convert grey/RGBA inputs or build the model with "
            f"in_chans={x.shape[1] if x.dim() == 4 else '?'}"
        )
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is too small: {model} downsamples by {min_size}, so "
            f"height and width must be at least {min_size} (resize or pad the images)"
        )
