"""Parameter and multiply-accumulate counts, for checking models against the papers' tables."""

from __future__ import annotations

from collections.abc import Iterable
from math import prod
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _CountsMacs(Protocol):
    """A module type passed in ``count_macs``'s ``extra``: it counts its own MACs."""

    def macs(self, inputs: tuple[Any, ...], output: Tensor) -> int: ...


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: Tensor, extra: Iterable[type[nn.Module]] = ()) -> int:
    """Multiply-accumulates of one forward pass of convolutions and linear layers.

    Counts ``out elements × in_channels / groups × kernel volume`` per conv and ``out elements ×
    in_features`` per linear layer (the convention of the papers' GMACs columns); norms, activations
    and element-wise ops are not counted.  ``extra`` lists further module types whose hook is their
    own ``macs(inputs, output)`` method.
    """
    total = 0

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, _CONVS):
            per_out = module.in_channels // module.groups * prod(module.kernel_size)
            total += output.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:
            total += cast(_CountsMacs, module).macs(args, output)

    kinds = (*_CONVS, nn.Linear, *extra)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
