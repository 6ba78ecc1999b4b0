"""Coefficient activations by name, so an ablation swaps them from a config."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ActivationFactory = Callable[[int], nn.Module]


#: name -> factory(axis).  ``axis`` only matters for activations that normalise over an axis.
ACTIVATIONS: dict[str, ActivationFactory] = {
    "gelu": lambda axis: nn.GELU(),
    "relu": lambda axis: nn.ReLU(),
    "silu": lambda axis: nn.SiLU(),
    "sigmoid": lambda axis: nn.Sigmoid(),
    "tanh": lambda axis: nn.Tanh(),
    "softmax": lambda axis: nn.Softmax(dim=axis),
    "identity": lambda axis: nn.Identity(),
}


def build_activation(act: str | nn.Module, axis: int) -> nn.Module:
    """Return ``act`` itself if it is a module, else the registered activation of that name.

    ``axis`` is the axis that a normalising activation (softmax) reduces over: the key/token axis for
    attention, the channel axis for FFN-like mixers.
    """
    if isinstance(act, nn.Module):
        return act
    try:
        factory = ACTIVATIONS[act]
    except KeyError:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(
            f"unknown coefficient activation {act!r}; valid names are: {valid} "
            "(or pass an nn.Module, or add one to metamixer.core.ACTIVATIONS)"
        ) from None
    return factory(axis)
