"""Helpers for equivalence tests in every package (no test framework imported here)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, in place.

    Freshly built BNs are identities in eval mode, which would let a wrong fold pass unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.affine:
                module.weight.copy_(torch.randn(n, generator=gen) * 0.5 + 1.0)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model


def count_modules(model: nn.Module, kind: type[nn.Module] = nn.Module) -> int:
    return sum(isinstance(m, kind) for m in model.modules())
