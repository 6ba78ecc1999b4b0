"""Analysis of MetaMixer models: effective receptive fields, coefficient sparsity, coefficient maps.

Everything works through forward hooks on the ``MetaMixer`` sub-operations (``act`` gives the
coefficients), so any model built from ``metamixer.core`` qualifies; the ERF works on any
differentiable feature extractor (timm ConvNeXt included).  Torch only; the plots live in
``metamixer.core.plots``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .mixer import MetaMixer


def effective_receptive_field(
    features: Callable[[Tensor], Tensor], inputs: Iterable[Tensor]
) -> Tensor:
    """Mean |∂ centre output / ∂ input| over ``inputs``: the ERF map of shape ``input.shape[2:]``.

    ``features`` maps a ``(1, C, *S)`` input to a ``(1, C', *S')`` feature map (or a forecast);
    the centre position of it, summed over channels, is differentiated (as RepLKNet's analysis).
    """
    total, count = None, 0
    for x in inputs:
        x = x.detach().clone().requires_grad_(True)
        out = features(x)
        centre = tuple(s // 2 for s in out.shape[2:])
        out[(slice(None), slice(None), *centre)].sum().backward()
        grad = x.grad.abs().sum((0, 1))
        total = grad if total is None else total + grad
        count += 1
    if total is None:
        raise ValueError("no inputs given for the ERF")
    return total / count


def erf_area_ratios(
    erf: Tensor, thresholds: Iterable[float] = (0.2, 0.3, 0.5, 0.99)
) -> dict[float, float]:
    """Share of the input area covered by the smallest centred square (or 1D window) that holds
    ``t`` of the total contribution, per threshold ``t`` (higher = larger receptive field)."""
    erf = erf / erf.sum()
    centre = [s // 2 for s in erf.shape]
    radius_max = max(max(c, s - 1 - c) for c, s in zip(centre, erf.shape, strict=True))
    sums = []
    for r in range(radius_max + 1):
        region = tuple(slice(max(0, c - r), c + r + 1) for c in centre)
        sums.append((float(erf[region].sum()), erf[region].numel()))
    out = {}
    for t in thresholds:
        area = next(n for s, n in sums if s >= t - 1e-9)
        out[t] = area / erf.numel()
    return out


def metamixers(model: nn.Module) -> list[tuple[str, MetaMixer]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MetaMixer)]


@contextmanager
def capture_coefficients(model: nn.Module):
    """Record the coefficients (outputs of ``act``) of every MetaMixer: yields a dict name -> list."""
    records: dict[str, list[Tensor]] = {}
    handles = []
    for name, mixer in metamixers(model):
        records[name] = []

        def hook(module: nn.Module, args: tuple, output: Tensor, key: str = name) -> None:
            records[key].append(output.detach())

        handles.append(mixer.act.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def coefficient_sparsity(
    model: nn.Module, inputs: Iterable[Tensor], threshold: float = 0.0
) -> list[dict]:
    """Per MetaMixer, in depth order: the share of coefficients above ``threshold`` (GELU's
    positive part: the memory slots a query activates) and whether it mixes tokens or channels."""
    with capture_coefficients(model) as records:
        for x in inputs:
            model(x)
    rows = []
    for depth, (name, mixer) in enumerate(metamixers(model)):
        coef = records[name]
        if not coef:
            continue
        active = sum(float((c > threshold).float().sum()) for c in coef)
        total = sum(c.numel() for c in coef)
        rows.append({"layer": name, "depth": depth, "mixes": mixer.mixes, "active": active / total})
    return rows


@torch.no_grad()
def coefficient_maps(
    model: nn.Module, x: Tensor, layer: str, top_k: int = 4
) -> tuple[Tensor, Tensor]:
    """The ``top_k`` most activated coefficient channels of MetaMixer ``layer`` for one input
    ``(1, C, H, W)``: maps ``(top_k, h, w)`` and their channel indices (channels-first layouts)."""
    names = dict(metamixers(model))
    if layer not in names:
        raise ValueError(f"no MetaMixer named {layer!r}; choose one of {list(names)[:8]}…")
    with capture_coefficients(model) as records:
        model(x)
    coef = records[layer][0][0]  # (C, h, w)
    strength = coef.flatten(1).mean(1)
    channels = strength.topk(min(top_k, len(strength))).indices
    return coef[channels], channels
