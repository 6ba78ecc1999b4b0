"""The mixer settings of every network, declared once.

``MixerSettings``' fields are the flat ``arch_args`` keys that choose and shape a network's mixers
(``--model.arch_args.token_kernels 5``); each takes one value for every stage or one value per
stage (per block, or per group of blocks, in a network of equal blocks).  ``stages`` expands and
checks them in one place; each ``StageSettings`` builds its stage's token and channel mixers from
the registries with the network's own context (width, ops bundle, norms, dropouts).  A network
takes them as one argument, ``mixers: MixerSettings``; the architecture registry groups the flat
keys into it, so a new setting is a new field here and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from torch import nn

from .registry import CHANNEL_MIXERS, TOKEN_MIXERS, MixerContext, stage_values

if TYPE_CHECKING:
    from .ops import SpatialOps


@dataclass(frozen=True)
class MixerSettings:
    """Which mixers a network uses and how they are shaped, per stage or one for all.

    Args:
        token_mixers: token mixer (a name in ``metamixer.core.TOKEN_MIXERS``; "ffnified" is FFNet).
        token_acts: the token mixer's coefficient activation (``None``: the mixer's own).
        channel_mixers: channel mixer (``metamixer.core.CHANNEL_MIXERS``; "convnext").
        channel_acts: the channel mixer's coefficient activation (``None``: the mixer's own).
        token_kernels: the token mixer's key kernel (the value's too unless set; pool size of
            pooling).
        token_value_kernels: the token mixer's value kernel where it differs from the key's.
        token_small_kernels: a parallel small kernel for the token mixer's large convs (folded
            away for inference; ``None``: a single conv).
        channel_kernels: the channel mixer's depthwise (query) kernel.
        channel_small_kernels: a parallel small kernel for it (``None``: a single conv).
        mlp_ratio: hidden width / width of the position-wise parts.
    """

    token_mixers: str | Sequence[str] = "ffnified"
    token_acts: str | Sequence[str | None] | None = None
    channel_mixers: str | Sequence[str] = "convnext"
    channel_acts: str | Sequence[str | None] | None = None
    token_kernels: int | Sequence[int] = 7
    token_value_kernels: int | Sequence[int | None] | None = None
    token_small_kernels: int | Sequence[int | None] | None = None
    channel_kernels: int | Sequence[int] = 3
    channel_small_kernels: int | Sequence[int | None] | None = None
    mlp_ratio: float = 4.0

    @classmethod
    def keys(cls) -> list[str]:
        """The flat ``arch_args`` keys (the fields)."""
        return [f.name for f in fields(cls)]

    @classmethod
    def split(cls, args: dict[str, Any]) -> tuple[MixerSettings, dict[str, Any]]:
        """``args`` -> (the settings among them, the other arguments)."""
        keys = set(cls.keys())
        settings = cls(**{k: v for k, v in args.items() if k in keys})
        return settings, {k: v for k, v in args.items() if k not in keys}

    def stages(
        self, count: int, *, groups: bool = False, stage_name: str = "stage"
    ) -> list[StageSettings]:
        """Every stage's settings, broadcast and checked up front (names, activations, list
        lengths); with ``groups`` a list whose length divides ``count`` spreads over equal
        consecutive groups of blocks."""
        per_stage = {
            f.name: stage_values(getattr(self, f.name), count, f.name, groups=groups)
            for f in fields(self)
            if f.name != "mlp_ratio"
        }
        stages = [
            StageSettings(
                where=f"{stage_name} {i + 1}",
                mlp_ratio=self.mlp_ratio,
                **{
                    name[:-1] if name.endswith("s") else name: values[i]
                    for name, values in per_stage.items()
                },
            )
            for i in range(count)
        ]
        for stage in stages:
            TOKEN_MIXERS.check(stage.token_mixer, stage.token_act, stage.where)
            CHANNEL_MIXERS.check(stage.channel_mixer, stage.channel_act, stage.where)
        return stages


@dataclass(frozen=True)
class StageSettings:
    """One stage's mixer settings (see ``MixerSettings``), ready to build its mixers."""

    where: str
    token_mixer: str
    token_act: str | None
    channel_mixer: str
    channel_act: str | None
    token_kernel: int
    token_value_kernel: int | None
    token_small_kernel: int | None
    channel_kernel: int
    channel_small_kernel: int | None
    mlp_ratio: float

    def token(self, dim: int, ops: SpatialOps, **context: Any) -> nn.Module:
        """The stage's token mixer at width ``dim``; ``context``: the network's own
        ``MixerContext`` fields (e.g. ``query_norm="batch"``, a longer ``where``)."""
        settings = dict(act=self.token_act, kernel_size=self.token_kernel,
                        value_kernel_size=self.token_value_kernel,
                        small_kernel=self.token_small_kernel)  # fmt: skip
        return TOKEN_MIXERS.build(self.token_mixer, self._context(dim, ops, settings, context))

    def channel(self, dim: int, ops: SpatialOps, **context: Any) -> nn.Module:
        """The stage's channel mixer at width ``dim`` (``context`` as for ``token``)."""
        settings = dict(act=self.channel_act, kernel_size=self.channel_kernel,
                        small_kernel=self.channel_small_kernel)  # fmt: skip
        return CHANNEL_MIXERS.build(self.channel_mixer, self._context(dim, ops, settings, context))

    def _context(
        self, dim: int, ops: SpatialOps, settings: dict[str, Any], context: dict[str, Any]
    ) -> MixerContext:
        return MixerContext(
            dim, ops, **{"mlp_ratio": self.mlp_ratio, "where": self.where, **settings, **context}
        )
