"""timm's classifier interface, shared by the image classifiers built here (FFNet, PoolFormer)."""

from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn


class TimmClassifier:
    """``get_classifier`` / ``reset_classifier`` and ``forward = forward_head ∘ forward_features``
    over a model's ``head``, ``global_pool`` and ``num_features``."""

    head: nn.Module
    global_pool: nn.Module
    num_features: int
    num_classes: int

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
