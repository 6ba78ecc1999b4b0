"""The TorchScript deployment modes the CPU benchmarks time: ``jit`` and ``onednn``."""

from __future__ import annotations

from collections.abc import Callable

import torch


def torchscript(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable:
    """``model`` traced on ``x`` and frozen, as a callable.

    ``jit`` adds ``optimize_for_inference`` (oneDNN conv fusion); ``onednn`` runs the frozen
    graph with the oneDNN Graph fuser switched on (convs and matmuls fused with their GELU / add /
    scale neighbours on the first runs, then reused), and off again after each call.
    """
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        if mode == "jit":
            return torch.jit.optimize_for_inference(frozen)
    if mode != "onednn":
        raise ValueError(f"unknown TorchScript mode {mode!r}: use 'jit' or 'onednn'")

    def run(inputs: torch.Tensor) -> torch.Tensor:
        torch.jit.enable_onednn_fusion(True)
        try:
            return frozen(inputs)
        finally:
            torch.jit.enable_onednn_fusion(False)

    return run
