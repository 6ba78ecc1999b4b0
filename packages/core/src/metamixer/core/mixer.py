"""The MetaMixer abstraction and the block that wraps it (the MetaFormer contract)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .activations import build_activation


class UsesInput:
    """Marker for key/value operations that also read the mixer's input ``x``.

    Self-attention builds K and V from ``x``: its key op is called as ``key(q, x)`` and its value op
    as ``value(coef, x)``.  Weight-only ops (convolutions, linear layers) are called with one argument.
    """


class MetaMixer(nn.Module):
    """``value(act(key(query(x))))`` with every sub-operation pluggable.

    Args:
        dim: channels of the input and of the output.
        query: produces the queries from ``x`` (``None`` = identity).
        key: the query-key interaction; produces the coefficients before activation.
        act: the coefficient activation, an ``nn.Module`` or a name in ``ACTIVATIONS``.
        value: the coefficient-value interaction (``None`` = identity).
        act_axis: the axis a normalising activation (softmax) reduces over, used when ``act`` is a name.
        mixes: what the mixer mixes, "tokens" or "channels" (for analysis, reports and the
            deployment passes that apply to position-wise mixers).

    Returns only the mixer's contribution; residual, norm and layer-scale belong to ``MetaBlock``.
    The sub-operations are children named ``query``, ``key``, ``act``, ``value``, so forward hooks on
    them expose coefficients for analysis.
    """

    def __init__(
        self,
        dim: int,
        *,
        query: nn.Module | None,
        key: nn.Module,
        act: str | nn.Module,
        value: nn.Module | None,
        act_axis: int = 1,
        mixes: str = "tokens",
    ) -> None:
        super().__init__()
        if mixes not in ("tokens", "channels"):
            raise ValueError(f"mixes must be 'tokens' or 'channels', got {mixes!r}")
        self.dim, self.mixes, self.act_axis = dim, mixes, act_axis
        self.query = nn.Identity() if query is None else query
        self.key = key
        self.act = build_activation(act, act_axis)
        self.value = nn.Identity() if value is None else value
        self._key_reads_input = isinstance(key, UsesInput)
        self._value_reads_input = isinstance(value, UsesInput)

    def forward(self, x: Tensor) -> Tensor:
        q = self.query(x)
        coef = self.act(self.key(q, x) if self._key_reads_input else self.key(q))
        return self.value(coef, x) if self._value_reads_input else self.value(coef)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (axis 0 = samples)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Learnable per-channel scale along ``channel_axis``, initialised to ``init``."""

    def __init__(self, dim: int, init: float, channel_axis: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init)))
        self.channel_axis = channel_axis

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return x * self.weight.view(shape)


class MetaBlock(nn.Module):
    """``x + drop_path(layer_scale(mixer(norm(x))))``.

    Args:
        dim: channels.
        mixer: any module mapping ``x`` to a tensor of the same shape (usually a ``MetaMixer``).
        norm: pre-norm (``None`` = none).
        drop_path: stochastic-depth probability, or a module for layouts that need their own
            (e.g. per-scene drop-path on concatenated point clouds).
        layer_scale: initial value of a per-channel layer-scale, ``None`` = no layer-scale.
        channel_axis: the channel axis of ``x`` (1 for channels-first, -1 for tokens).
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        *,
        norm: nn.Module | None = None,
        drop_path: float | nn.Module = 0.0,
        layer_scale: float | None = None,
        channel_axis: int = 1,
    ) -> None:
        super().__init__()
        self.norm = nn.Identity() if norm is None else norm
        self.mixer = mixer
        self.layer_scale = (
            nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale, channel_axis)
        )
        self.drop_path = drop_path if isinstance(drop_path, nn.Module) else DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.layer_scale(self.mixer(self.norm(x))))
