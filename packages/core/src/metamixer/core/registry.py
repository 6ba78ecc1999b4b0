"""One open registry of token and channel mixers, shared by every modality.

A mixer factory takes a ``MixerContext`` (what the network knows at that place: width, the layout's
ops bundle, kernels, expansion, activation) and returns a module mapping ``x`` to a tensor of the
same shape.  Built-in mixers are registered in ``instances.py`` exactly like a user's::

    from metamixer.core import MixerContext, MetaMixer, register_token_mixer

    @register_token_mixer("gated_conv")
    def gated_conv(c: MixerContext) -> MetaMixer:
        return MetaMixer(c.dim, query=c.ops.query(c.dim, norm=False),
                         key=c.ops.depthwise(c.dim, c.kernel_size), act=c.act or "sigmoid",
                         value=None, act_axis=c.ops.channel_axis)

Networks name their mixers per stage (``token_mixers=("ffnified", "ffnified", "attention",
"attention")``); ``build_mixer`` refuses an unknown name or an activation the mixer cannot take,
naming the place, the value and the valid choices.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from torch import nn

from .activations import ACTIVATIONS

if TYPE_CHECKING:
    from .ops import SpatialOps

T = TypeVar("T")


@dataclass(frozen=True)
class MixerContext:
    """What a mixer factory receives.

    Args:
        dim: channels per position (per variable in the multivariate time-series layout).
        ops: the layout's ops bundle (dense 1D/2D/3D, tokens, sparse 3D, per-variable 1D).
        act: the coefficient activation asked for, ``None`` = the mixer's own default.
        kernel_size: the mixer's spatial kernel (key kernel; pool size for pooling).
        value_kernel_size: the value kernel of mixers that have one, ``None`` = ``kernel_size``.
        small_kernel: a parallel small kernel for re-parameterizable convs, ``None`` = none.
        conv_norm: depthwise convs followed by BatchNorm (foldable).
        query_norm: a norm on the query ("batch", "layer"), ``None`` = none.
        mlp_ratio: hidden width / dim of position-wise parts.
        drop: dropout on the hidden (pre-activation) coefficients.
        proj_drop: dropout on the mixer's output.
        num_heads: attention heads, ``None`` = ``dim // 32`` rounded to a divisor.
        where: the place in the network, for error messages (e.g. "stage 3").
    """

    dim: int
    ops: SpatialOps
    act: str | None = None
    kernel_size: int = 7
    value_kernel_size: int | None = None
    small_kernel: int | None = None
    conv_norm: bool = False
    query_norm: str | None = None
    mlp_ratio: float = 4.0
    drop: float = 0.0
    proj_drop: float = 0.0
    num_heads: int | None = None
    where: str = ""

    def activation(self, default: str) -> str:
        return default if self.act is None else self.act


@dataclass(frozen=True)
class MixerEntry:
    name: str
    factory: Callable[[MixerContext], nn.Module]
    #: the coefficient activations the mixer takes; ``None`` = every registered one
    acts: tuple[str, ...] | None


class MixerRegistry:
    """Mixers of one role (token or channel) by name."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._entries: dict[str, MixerEntry] = {}

    def register(
        self, name: str, *, acts: Sequence[str] | None = None
    ) -> Callable[[Callable[[MixerContext], nn.Module]], Callable[[MixerContext], nn.Module]]:
        """Decorator: register ``factory(context) -> module`` under ``name``.

        ``acts`` lists the coefficient activations the mixer can take (default: any registered);
        re-registering a name replaces it.
        """

        def decorate(
            factory: Callable[[MixerContext], nn.Module],
        ) -> Callable[[MixerContext], nn.Module]:
            self._entries[name] = MixerEntry(name, factory, None if acts is None else tuple(acts))
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str, act: str | None, where: str = "") -> MixerEntry:
        """The entry of ``name``, after checking the name and the activation."""
        place = f" at {where}" if where else ""
        entry = self._entries.get(name)
        if entry is None:
            raise ValueError(
                f"unknown {self.role} mixer {name!r}{place}; registered: {', '.join(self.names())} "
                "(register your own with metamixer.core.register_"
                f"{self.role}_mixer and load its module with --import)"
            )
        if act is not None:
            valid = entry.acts if entry.acts is not None else tuple(sorted(ACTIVATIONS))
            if act not in valid:
                raise ValueError(
                    f"the {self.role} mixer {name!r}{place} cannot take the coefficient activation "
                    f"{act!r}; valid: {', '.join(valid)}"
                )
        return entry

    def build(self, name: str, context: MixerContext) -> nn.Module:
        return self.check(name, context.act, context.where).factory(context)


TOKEN_MIXERS = MixerRegistry("token")
CHANNEL_MIXERS = MixerRegistry("channel")
register_token_mixer = TOKEN_MIXERS.register
register_channel_mixer = CHANNEL_MIXERS.register


def stage_values(value: T | Sequence[T], count: int, name: str, *, groups: bool = False) -> list[T]:
    """Broadcast a scalar to ``count`` stages, or check a per-stage list.

    With ``groups`` (blocks of one stage) a list whose length divides ``count`` is spread over
    equal consecutive groups: ``["ffnified", "attention"]`` over 4 blocks gives 2 of each.
    """
    if not isinstance(value, (list, tuple)):
        return [value] * count  # type: ignore[list-item]  # a scalar T here
    n = len(value)
    if n == count:
        return list(value)
    if groups and n and count % n == 0:
        return [v for v in value for _ in range(count // n)]
    need = f"{count} entries" + (f" (or a divisor of {count})" if groups else "")
    raise ValueError(f"{name} has {n} entries but the network has {need}: {list(value)}")


def import_modules(names: Sequence[str]) -> None:
    """Import user modules that register mixers (``--import my_mixers``), with a clear error."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:
            raise ImportError(
                f"cannot import {name!r} (given with --import): {type(err).__name__}: {err}; "
                "it must be importable from the current folder or PYTHONPATH"
            ) from err


__all__ = [
    "CHANNEL_MIXERS",
    "TOKEN_MIXERS",
    "MixerContext",
    "MixerRegistry",
    "import_modules",
    "register_channel_mixer",
    "register_token_mixer",
    "stage_values",
]
