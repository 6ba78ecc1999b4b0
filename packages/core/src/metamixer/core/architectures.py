"""Named network architectures: each variant spells out every argument once (timm's ``model_args``).

A modality registers its variants (``register_architecture("ffnet_1", FFNet, args={...},
task_args=("num_classes", "in_chans"))``); LightningModules, estimators, tools and analysis commands
all take an architecture name plus overrides and build it with ``build_network``; a trained network
comes back from a Lightning checkpoint through ``network_from_checkpoint``.  ``task_args`` are set by
the task (the data: classes, channels, window lengths), never by the variant or an override.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import read_checkpoint
from .registry import import_modules
from .settings import MixerSettings

#: the network argument that takes its ``MixerSettings``
MIXERS = "mixers"


@dataclass(frozen=True)
class Architecture:
    name: str
    cls: type[nn.Module]
    args: Mapping[str, Any]
    task_args: tuple[str, ...] = ()
    #: how to call the network (default ``cls``), e.g. timm's ``create_model`` for its registry
    build: Callable[..., nn.Module] | None = None
    #: a small input for contract tests: ``example(network) -> tuple of forward arguments``
    example: Callable[[nn.Module], tuple[Any, ...]] | None = field(default=None, compare=False)
    #: task arguments of a small test instance (e.g. ``{"num_classes": 3}``)
    test_task: Mapping[str, Any] = field(default_factory=dict)

    @property
    def takes_mixers(self) -> bool:
        """Whether the network takes its mixer settings as one argument ``mixers``."""
        return MIXERS in inspect.signature(self.cls).parameters

    def parameters(self) -> list[str]:
        """The flat argument names: the constructor's, with ``mixers`` spelled out as the fields
        of ``MixerSettings``."""
        names = []
        for p in inspect.signature(self.cls).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names += MixerSettings.keys() if p.name == MIXERS else [p.name]
        return names

    def construct(self, args: Mapping[str, Any], **extra: Any) -> nn.Module:
        """Call the network (or ``build``) with the full flat argument set ``args``: the mixer
        settings among them grouped into one ``MixerSettings`` (the one place they are merged)."""
        call = self.build or self.cls
        if not self.takes_mixers:
            return call(**args, **extra)
        settings, rest = MixerSettings.split(dict(args))
        return call(**rest, mixers=settings, **extra)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(
    name: str,
    cls: type[nn.Module],
    args: Mapping[str, Any],
    *,
    task_args: tuple[str, ...] = (),
    build: Callable[..., nn.Module] | None = None,
    example: Callable[[nn.Module], tuple[Any, ...]] | None = None,
    test_task: Mapping[str, Any] | None = None,
) -> Architecture:
    """Register a variant; every constructor argument that is not a task argument must be given."""
    entry = Architecture(name, cls, dict(args), tuple(task_args), build, example, test_task or {})
    if entry.takes_mixers:  # mixer settings not spelled out keep MixerSettings' defaults
        entry = replace(entry, args={**asdict(MixerSettings()), **args})
    args = entry.args
    params = entry.parameters()
    unknown = sorted(set(args) - set(params))
    missing = [p for p in params if p not in args and p not in task_args]
    if unknown or missing:
        raise ValueError(
            f"architecture {name!r}: unknown arguments {unknown}, arguments not spelled out "
            f"{missing} (every argument of {cls.__name__} is given once, here)"
        )
    ARCHITECTURES[name] = entry
    return entry


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; registered: {', '.join(sorted(ARCHITECTURES))} "
            "(a modality's architectures are registered when its package is imported)"
        ) from None


def network_args(
    name: str, task: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The full argument set of ``name`` with the task's values and the overrides applied."""
    entry = get_architecture(name)
    task, overrides = dict(task or {}), dict(overrides or {})
    params = entry.parameters()
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ValueError(
            f"{name} has no argument {', '.join(map(repr, unknown))}; valid: {', '.join(params)}"
        )
    fixed = sorted(set(overrides) & set(entry.task_args))
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} of {name} come from the data, not from arch_args; set them on the "
            "data module (or the model's own argument)"
        )
    return {**entry.args, **task, **overrides}


def build_network(
    name: str, task: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build architecture ``name`` with the task's values and the overrides (checked by name)."""
    return get_architecture(name).construct(network_args(name, task, overrides))


def state_dict_of(
    checkpoint: Mapping[str, Any], weights: str = "raw", source: str = "checkpoint"
) -> dict[str, Any]:
    """The network's weights inside a Lightning checkpoint: ``model.*`` (raw) or the EMA copy."""
    state = checkpoint.get("state_dict", checkpoint)
    prefixes: tuple[str, ...]
    if weights == "raw":
        prefixes = ("model.",)
    elif weights == "ema":
        prefixes = ("ema.module.", "ema.")
    else:
        raise ValueError(f"weights must be 'raw' or 'ema', got {weights!r}")
    for prefix in prefixes:
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    raise ValueError(
        f"{source} holds no {weights} weights ({'/'.join(prefixes)}*)"
        + ("; it was trained without ema_decay" if weights == "ema" else "")
    )


def network_from_checkpoint(
    path: str | Path,
    *,
    weights: str = "raw",
    build: Callable[[str, Mapping[str, Any], Mapping[str, Any]], nn.Module] = build_network,
    checkpoint: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The network of a Lightning checkpoint, rebuilt from its ``arch`` / ``arch_args`` and the
    task arguments in its hyperparameters, with its ``raw`` or ``ema`` weights (strict); the
    modules its run imported (``--import``, saved in the checkpoint) are imported first.
    ``checkpoint``: the file's contents when the caller has read it already."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    import_modules((checkpoint.get("metamixer") or {}).get("imports") or [])  # a user's mixers
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, Mapping) or "arch" not in hp:
        raise ValueError(f"{path} is not a checkpoint of this project (no hyper_parameters.arch)")
    name = hp["arch"]
    entry = ARCHITECTURES.get(name)
    task = {k: hp[k] for k in (entry.task_args if entry else ()) if k in hp}
    network = build(name, task, hp.get("arch_args") or {})
    state = state_dict_of(checkpoint, weights, str(path))
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit {name} with its saved arch_args: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return network.eval()
