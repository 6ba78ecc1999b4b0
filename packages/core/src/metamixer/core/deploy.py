"""Deployment passes: explicit, switchable rewrites of a network for a target.

A model's definition is the plain, trainable network; nothing in it depends on where it will run.
Each pass below rewrites a model in place (module swaps, never new parameter values beyond folding)
and returns it, computes the same function up to float rounding (a parity test per pass), and can
be left out.  ``deploy(model, target)`` applies a named recipe from ``RECIPES``:

===========================  ================================================================
pass                         rewrite
===========================  ================================================================
reparameterize               fold training-time branches and BatchNorms into single convs (one
                             grouped conv per folded layer: target-neutral, stable state dict)
interleave_multiplier_convs  a depthwise conv with channel multiplier r -> r pure depthwise
                             convs with interleaved outputs (oneDNN's fast depthwise kernels)
inplace_activations          GELU overwrites its input at inference where nothing else reads it
slice_positionwise           position-wise mixers evaluated on slices of large inputs (bounded
                             working memory)
banded_depthwise_1d          depthwise conv1d as a banded matrix product on short sequences
integer_mask_dropout         dropout masks drawn as 15-bit integers (training)
channels_last                NHWC memory format
===========================  ================================================================

``benchmarks/deploy.py`` times every pass on and off.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from .cpu_kernels import (
    BandedDepthwiseConv1d,
    InplaceGELU,
    IntegerMaskDropout,
    InterleavedDepthwise,
    SlicedMetaMixer,
)
from .mixer import MetaMixer, UsesInput
from .ops import PoolMinusInput
from .reparam import FusableConv, reparameterize_model

#: a pass rewrites the model in place and returns how many modules it changed
Pass = Callable[[nn.Module], int]


def _children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """``(parent, name, child)`` for every module below ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            yield parent, name, child


def _swap_class(model: nn.Module, fits: Callable[[nn.Module], bool], cls: type) -> int:
    """Give every module that ``fits`` the class ``cls`` (a subclass with the same parameters)."""
    changed = 0
    for module in model.modules():
        if fits(module):
            module.__class__ = cls
            changed += 1
    return changed


def _reparameterize(model: nn.Module) -> int:
    pending = sum(isinstance(m, FusableConv) and m.fused is None for m in model.modules())
    reparameterize_model(model)
    return pending


def _interleave_multiplier_convs(model: nn.Module) -> int:
    changed = 0
    for parent, name, child in _children(model):
        if InterleavedDepthwise.fits(child):
            setattr(parent, name, InterleavedDepthwise(child))
            changed += 1
    return changed


#: modules whose output is a tensor of their own (never the input or a view of it)
_FRESH = (nn.modules.conv._ConvNd, nn.Linear, FusableConv, nn.modules.batchnorm._BatchNorm,
          nn.LayerNorm, PoolMinusInput, InterleavedDepthwise)  # fmt: skip
_PASS_THROUGH = (nn.Identity, nn.Dropout)  # return their input at inference


def _returns_fresh(module: nn.Module) -> bool:
    """True if ``module``'s output at inference is a fresh tensor that no hook keeps."""
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    if isinstance(module, nn.Sequential):
        for part in reversed(module):
            if part._forward_hooks:
                return False
            if not isinstance(part, _PASS_THROUGH):
                return _returns_fresh(part)
        return False
    return isinstance(module, _FRESH)


def _inplace_activations(model: nn.Module) -> int:
    changed = 0
    for module in model.modules():
        if isinstance(module, MetaMixer) and not isinstance(module.key, UsesInput):
            if type(module.act) is nn.GELU and _returns_fresh(module.key):
                module.act.__class__ = InplaceGELU
                changed += 1
        elif isinstance(module, nn.Sequential):
            for before, act in itertools.pairwise(module):
                if type(act) is nn.GELU and _returns_fresh(before):
                    act.__class__ = InplaceGELU
                    changed += 1
    return changed


def _slice_positionwise(model: nn.Module) -> int:
    def fits(m: nn.Module) -> bool:
        return (
            type(m) is MetaMixer
            and m.mixes == "channels"
            and not (m._key_reads_input or m._value_reads_input)
            and m.act_axis in (1, -1)
        )

    return _swap_class(model, fits, SlicedMetaMixer)


def _channels_last(model: nn.Module) -> int:
    changed = sum(p.dim() == 4 for p in model.parameters())
    if changed:
        model.to(memory_format=torch.channels_last)
    return changed


PASSES: dict[str, Pass] = {}


def register_pass(name: str, rewrite: Pass) -> Pass:
    """Register a deployment pass under ``name`` (refused if the name is taken): ``rewrite(model)``
    rewrites the model in place, computes the same function up to float rounding, and returns how
    many modules it changed.  Use it with ``apply_passes`` or in a recipe of ``RECIPES``."""
    if name in PASSES:
        raise ValueError(f"deployment pass {name!r} is registered already; choose another name")
    PASSES[name] = rewrite
    return rewrite


register_pass("reparameterize", _reparameterize)
register_pass("interleave_multiplier_convs", _interleave_multiplier_convs)
register_pass("inplace_activations", _inplace_activations)
register_pass("slice_positionwise", _slice_positionwise)
register_pass(
    "banded_depthwise_1d",
    lambda m: _swap_class(m, BandedDepthwiseConv1d.fits, BandedDepthwiseConv1d),
)
register_pass(
    "integer_mask_dropout",
    lambda m: _swap_class(m, lambda d: type(d) is nn.Dropout, IntegerMaskDropout),
)
register_pass("channels_last", _channels_last)

#: target -> passes in order; inference targets also put the model in eval mode
RECIPES: dict[str, tuple[str, ...]] = {
    "portable": ("reparameterize",),
    "cpu": (
        "reparameterize",
        "interleave_multiplier_convs",
        "inplace_activations",
        "slice_positionwise",
        "banded_depthwise_1d",
        "channels_last",
    ),
    "cuda": ("reparameterize", "channels_last"),
    "cpu_training": ("banded_depthwise_1d", "integer_mask_dropout"),
}
TRAINING_RECIPES = ("cpu_training",)
#: what each target needs the model's parameters on
DEVICES = {"cpu": "cpu", "cpu_training": "cpu", "cuda": "cuda"}


def apply_passes(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Apply passes by name, in order; a pass with nothing to rewrite in ``model`` warns."""
    names = list(names)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ValueError(f"unknown deployment passes {unknown}; valid: {', '.join(PASSES)}")
    for name in names:
        if PASSES[name](model) == 0:
            warnings.warn(
                f"deployment pass {name!r} found nothing to rewrite in {type(model).__name__}; "
                "the model is unchanged",
                stacklevel=2,
            )
    return model


def deploy(model: nn.Module, target: str = "cpu", *, skip: Iterable[str] = ()) -> nn.Module:
    """Apply the recipe ``RECIPES[target]`` in place (minus the passes named in ``skip``) and
    return the model; inference targets put it in eval mode first.  Passes that find nothing to
    rewrite are skipped silently here (e.g. 1D passes on an image model)."""
    if target not in RECIPES:
        raise ValueError(f"unknown deployment target {target!r}; valid: {', '.join(RECIPES)}")
    skip = set(skip)
    unknown = sorted(skip - set(RECIPES[target]))
    if unknown:
        raise ValueError(
            f"skip names passes not in the {target!r} recipe: {unknown}; "
            f"its passes: {', '.join(RECIPES[target])}"
        )
    device = DEVICES.get(target)
    found = {p.device.type for p in model.parameters()}
    if device is not None and found - {device}:
        raise ValueError(
            f"target {target!r} runs on {device} but the model's parameters are on "
            f"{', '.join(sorted(found))}; move the model first (model.to({device!r})) or pick "
            f"one of: {', '.join(t for t, d in DEVICES.items() if d in found)}"
        )
    if target not in TRAINING_RECIPES:
        model.eval()
    for name in RECIPES[target]:
        if name not in skip:
            PASSES[name](model)
    return model
