"""Analysis of MetaMixer models: effective receptive fields, coefficient sparsity, coefficient maps,
per-class key statistics, and the residual (layer-) scales an untrained comparison must equalise.

Everything works through forward hooks on the ``MetaMixer`` sub-operations (``act`` gives the
coefficients), so any model built from ``metamixer.core`` qualifies (FFNet, the core PoolFormer);
the ERF works on any differentiable feature extractor (timm ConvNeXt included).  Torch only; the
plots live in ``metamixer.lab.plots``.

What the numbers mean depends on the weights: at initialisation a network with layer-scale 1e-6
(timm's ConvNeXt, FFNet-3/4) is close to the identity in every block, so its ERF is that of the
stem and downsampling layers alone; compare untrained networks only at equal residual scales
(``set_residual_scales``), and say which weights a figure shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from metamixer.core.mixer import MetaMixer


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
        centre: tuple[slice | int, ...] = (
            slice(None),
            slice(None),
            *(s // 2 for s in out.shape[2:]),
        )
        out[centre].sum().backward()
        assert x.grad is not None  # x requires grad and out depends on it
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
    model: nn.Module, inputs: Iterable[Tensor], threshold: float = 0.0, gated_only: bool = True
) -> list[dict]:
    """Per MetaMixer, in depth order: the share of coefficients above ``threshold`` (GELU's
    positive part: the memory slots a query activates) and whether it mixes tokens or channels.

    ``gated_only`` leaves out mixers whose activation is the identity (PoolFormer's pooling mixer:
    its signed ``avgpool(x) - x`` is not a gate); ``depth`` still counts every mixer."""
    with capture_coefficients(model) as records:
        for x in inputs:
            model(x)
    rows = []
    for depth, (name, mixer) in enumerate(metamixers(model)):
        coef = records[name]
        if not coef or (gated_only and not gated(mixer)):
            continue
        active = sum(float((c > threshold).float().sum()) for c in coef)
        total = sum(c.numel() for c in coef)
        rows.append(
            {
                "layer": name,
                "depth": depth,
                "mixes": mixer.mixes,
                "act": type(mixer.act).__name__,
                "active": active / total,
            }
        )
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


# --- residual scales (layer-scale / gamma) --------------------------------------------------------

#: Parameters that scale a residual branch: ``metamixer.core.LayerScale`` (``layer_scale.weight``),
#: timm's ConvNeXt / ViT ``gamma`` and MetaFormer ``layer_scale1.scale``.  (A shortcut scale such as
#: MetaFormer's ``res_scale`` and learnable activation scales are not residual-branch scales.)
_RESIDUAL_SCALE = re.compile(r"(^|\.)(gamma|layer_scale\d*\.(weight|scale|gamma))$")


def residual_scale_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The layer-scale parameters of ``model`` (every residual branch's per-channel multiplier)."""
    return [(n, p) for n, p in model.named_parameters() if _RESIDUAL_SCALE.search(n)]


def residual_scale(model: nn.Module) -> float:
    """The typical residual-branch scale: the median |layer-scale| over all channels, or 1.0 for
    a network without layer-scales (a plain residual ``x + f(x)``).

    At initialisation it is the layer-scale's initial value: timm's ConvNeXt and FFNet-3/4 start at
    1e-6 (every block is then close to the identity), FFNet-1/2 have none (1.0)."""
    values = [p.detach().abs().flatten() for _, p in residual_scale_parameters(model)]
    if not values:
        return 1.0
    return float(torch.cat(values).median())


@torch.no_grad()
def set_residual_scales(model: nn.Module, value: float) -> int:
    """Set every layer-scale entry of ``model`` to ``value`` (to compare untrained networks at
    equal residual scales); returns how many parameters were set (0: the model has none)."""
    params = residual_scale_parameters(model)
    for _, p in params:
        p.fill_(value)
    return len(params)


def unequal_residual_scales(scales: dict[str, float], factor: float = 10.0) -> bool:
    """True when the largest and smallest residual scale differ by more than ``factor``."""
    values = list(scales.values())
    return bool(values) and max(values) > factor * min(values)


# --- which keys fire for which class --------------------------------------------------------------


def gated(mixer: MetaMixer) -> bool:
    """Whether a mixer's coefficients pass through a gate (GELU, ReLU, softmax …): a pooling
    mixer's identity ``act`` leaves the signed ``avgpool(x) - x``, which has no keys that fire."""
    return not isinstance(mixer.act, nn.Identity)


@torch.no_grad()
def key_statistics(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    threshold: float | None = None,
    top_share: float = 0.1,
    layers: Sequence[str] | None = None,
) -> list[dict]:
    """Per-class key statistics of every gated MetaMixer (or ``layers``), in depth order.

    A *key* is one unit of a mixer's coefficient along its activation axis (``act_axis``): a hidden
    unit of an FFN / ConvNeXt channel mixer, a channel of FFNified attention, a key token of
    attention.  Each key's activation (the coefficient after ``act``) is averaged over positions
    and over the images of a class, giving ``mean[class, key]``.  A key *fires* for a class when
    that mean exceeds ``threshold``, or, with ``threshold=None``, when it is among the
    ``ceil(top_share * keys)`` highest keys of that class.

    ``batches`` yields ``(images, labels)``.  Each row: ``layer``, ``depth``, ``mixes``, ``keys``,
    ``mean`` (classes × keys), ``fires`` (bool, classes × keys), ``classes_per_key`` (how many
    classes each key fires for), ``active`` (keys that fire for at least one class), and the shares
    of those active keys that fire for at least half of the classes (``shared_half``), for every
    class (``shared_all``) and for exactly one (``specific``).  Classes without images are left
    out of every count (``classes_seen``).
    """
    if threshold is None and not 0 < top_share <= 1:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    chosen = [(n, m) for n, m in metamixers(model) if (n in layers if layers else gated(m))]
    if layers:
        missing = sorted(set(layers) - {n for n, _ in chosen})
        if missing:
            raise ValueError(
                f"no MetaMixer named {missing}; choose from {list(dict(metamixers(model)))[:8]}…"
            )
    if not chosen:
        raise ValueError("the model has no gated MetaMixer to analyse")
    depth = {n: i for i, (n, _) in enumerate(metamixers(model))}
    sums: dict[str, Tensor] = {}
    current: list[Tensor] = []
    counts = torch.zeros(num_classes, dtype=torch.float64)
    handles = []
    for name, mixer in chosen:

        def hook(
            module: nn.Module, args: tuple, out: Tensor, key: str = name, axis: int = mixer.act_axis
        ) -> None:
            per_key = out.detach().movedim(axis, -1)
            per_key = per_key.reshape(per_key.shape[0], -1, per_key.shape[-1]).double().mean(1)
            if key not in sums:
                sums[key] = torch.zeros(num_classes, per_key.shape[-1], dtype=torch.float64)
            sums[key].index_add_(0, current[0], per_key)

        handles.append(mixer.act.register_forward_hook(hook))
    try:
        for images, labels in batches:
            labels = torch.as_tensor(labels, dtype=torch.long).flatten()
            if labels.numel() != images.shape[0]:
                raise ValueError(f"{images.shape[0]} images but {labels.numel()} labels")
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(
                    f"labels must lie in [0, {num_classes}), got {labels.tolist()[:8]}"
                )
            current[:] = [labels]
            counts += torch.bincount(labels, minlength=num_classes).double()
            model(images)
    finally:
        for h in handles:
            h.remove()
    seen = counts > 0
    if not seen.any():
        raise ValueError("no images given for the key statistics")
    rows = []
    for name, mixer in chosen:
        mean = (sums[name][seen] / counts[seen, None]).float()
        if threshold is not None:
            fires = mean > threshold
        else:
            k = max(1, math.ceil(top_share * mean.shape[1]))
            fires = torch.zeros_like(mean, dtype=torch.bool)
            fires.scatter_(1, mean.topk(k, dim=1).indices, True)
        per_key = fires.sum(0)
        active = int((per_key > 0).sum())
        n = int(seen.sum())

        def share(mask: Tensor, active: int = active) -> float:
            return float(mask.sum()) / active if active else 0.0

        rows.append(
            {
                "layer": name,
                "depth": depth[name],
                "mixes": mixer.mixes,
                "keys": mean.shape[1],
                "classes_seen": seen.nonzero().flatten().tolist(),
                "mean": mean,
                "fires": fires,
                "classes_per_key": per_key,
                "active": active,
                "shared_half": share(per_key >= math.ceil(n / 2)),
                "shared_all": share(per_key == n),
                "specific": share(per_key == 1),
            }
        )
    return rows
