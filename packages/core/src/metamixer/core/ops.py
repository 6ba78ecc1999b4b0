"""The ops contract of a tensor layout, and its dense and token implementations.

A modality hands an *ops bundle* to the mixer constructors in ``instances.py``; the bundle decides how
a depthwise conv, a pointwise projection, a norm, a pool or a fusable conv is realised.
``SpatialOps`` is the one contract every bundle implements in full (checked by mypy in CI):
``DenseOps(ndim)`` for channels-first ``(B, C, *spatial)`` tensors, ``TokenOps`` for ``(B, N, C)``
token sequences, and the modalities' own (sparse voxels in ``metamixer.pointcloud.ops``,
per-variable patches in ``metamixer.timeseries.ops``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from .reparam import (
    BATCHNORM_CLASSES,
    CONV_CLASSES,
    ConvBN,
    ConvFactory,
    DenseConvs,
    RepDWConv,
)


class SpatialOps(ConvFactory, Protocol):
    """What a layout provides to build mixers; ``dim`` arguments count features per position
    (``channels(dim)`` gives the tensor channels that hold them).  An operation a layout cannot
    express raises ``NotImplementedError`` naming the alternative."""

    @property
    def channel_axis(self) -> int:
        """The channel axis of the layout's tensors."""
        ...

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        """A per-position linear map; ``norm``: bias-free and followed by a norm (foldable)."""
        ...

    def depthwise(
        self,
        dim: int,
        kernel_size: int,
        *,
        out_dim: int | None = None,
        stride: int = 1,
        small_kernel: int | None = None,
        norm: bool = False,
    ) -> nn.Module:
        """A per-channel spatial conv: plain with bias; ``norm`` -> conv + BN; ``small_kernel``
        -> a parallel small kernel (each branch with BN); ``out_dim`` a multiple of ``dim``."""
        ...

    def query(self, dim: int, *, norm: bool = False) -> nn.Module:
        """A token mixer's query projection (all channels of a position)."""
        ...

    def project(self, in_dim: int, out_dim: int) -> nn.Module:
        """A channel mixer's output projection (hidden -> dim)."""
        ...

    def channels(self, dim: int) -> int:
        """The tensor channels that hold ``dim`` features (``M·dim`` for M variables)."""
        ...

    def norm(self, dim: int, kind: str = "batch") -> nn.Module:
        """A norm over the features: "batch" or "layer" (each layout names its default)."""
        ...

    def avg_pool(self, kernel_size: int) -> nn.Module:
        """Mean over the ``kernel_size`` neighbourhood, positions outside not counted."""
        ...

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        """Run a ``(B, N, C)`` token mixer on this layout's tensors."""
        ...


POOL_CLASSES: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


class LayerNormChannels(nn.LayerNorm):
    """LayerNorm over the channel axis of a channels-first tensor ``(B, C, *spatial)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(
            x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps
        ).movedim(-1, 1)


class PoolMinusInput(nn.Module):
    """PoolFormer's token interaction: ``avgpool(x) - x`` (zero padding not counted)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x) - x


class ChannelsFirstAsTokens(nn.Module):
    """Run a token mixer written for ``(B, N, C)`` on a channels-first ``(B, C, *spatial)`` tensor."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        return self.mixer(tokens).transpose(1, 2).reshape(x.shape)


class PositionwiseProjections:
    """``query`` / ``project`` / ``channels`` of a layout whose ``pointwise`` op mixes all channels
    of a position (dense, token and sparse layouts)."""

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        raise NotImplementedError

    def query(self, dim: int, *, norm: bool = False) -> nn.Module:
        """A pointwise projection with bias, or bias-free + norm (foldable) with ``norm``."""
        return self.pointwise(dim, dim, norm=norm, bias=not norm)

    def project(self, in_dim: int, out_dim: int) -> nn.Module:
        return self.pointwise(in_dim, out_dim)

    def channels(self, dim: int) -> int:
        return dim


@dataclass(frozen=True)
class DenseOps(DenseConvs, PositionwiseProjections):
    """Spatial ops on channels-first dense tensors with ``ndim`` spatial dimensions (its fusable
    convs: ``DenseConvs``)."""

    channel_axis: int = 1

    def depthwise(
        self,
        dim: int,
        kernel_size: int,
        *,
        out_dim: int | None = None,
        stride: int = 1,
        small_kernel: int | None = None,
        norm: bool = False,
    ) -> nn.Module:
        """Depthwise conv: plain with bias; ``norm`` -> conv+BN; ``small_kernel`` -> RepDWConv."""
        out_dim = dim if out_dim is None else out_dim
        if small_kernel is not None:
            return RepDWConv(
                dim, kernel_size, small_kernel, out_channels=out_dim, ndim=self.ndim, stride=stride
            )
        if norm:
            return ConvBN(dim, out_dim, kernel_size, ndim=self.ndim, stride=stride, groups=dim)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        return self.conv(dim, out_dim, kernel_size, stride=stride, groups=dim, bias=True)

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        """1×1 conv; ``norm`` -> bias-free conv followed by BN (foldable)."""
        if norm:
            return ConvBN(in_dim, out_dim, 1, ndim=self.ndim)
        return CONV_CLASSES[self.ndim](in_dim, out_dim, 1, bias=bias)

    def norm(self, dim: int, kind: str = "batch") -> nn.Module:
        """``kind``: "batch" (BatchNorm) or "layer" (LayerNorm over channels)."""
        if kind == "batch":
            return BATCHNORM_CLASSES[self.ndim](dim)
        if kind == "layer":
            return LayerNormChannels(dim, eps=1e-6)
        raise ValueError(f"unknown norm kind {kind!r}; valid: 'batch', 'layer'")

    def avg_pool(self, kernel_size: int) -> nn.Module:
        return POOL_CLASSES[self.ndim](kernel_size, 1, kernel_size // 2, count_include_pad=False)

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return ChannelsFirstAsTokens(mixer)


@dataclass(frozen=True)
class TokenOps(PositionwiseProjections):
    """Ops on channels-last token sequences ``(..., N, C)``: linear layers and LayerNorm; a token
    sequence has no spatial neighbourhood, so convs and pools are refused by name."""

    channel_axis: int = -1
    ndim: int = 0  # no spatial dimensions

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        if norm:
            return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), nn.LayerNorm(out_dim))
        return nn.Linear(in_dim, out_dim, bias=bias)

    def norm(self, dim: int, kind: str = "layer") -> nn.Module:
        if kind != "layer":
            raise ValueError(f"TokenOps only supports kind='layer', got {kind!r}")
        return nn.LayerNorm(dim)

    def depthwise(
        self,
        dim: int,
        kernel_size: int,
        *,
        out_dim: int | None = None,
        stride: int = 1,
        small_kernel: int | None = None,
        norm: bool = False,
    ) -> nn.Module:
        raise NotImplementedError(_NO_NEIGHBOURS)

    def avg_pool(self, kernel_size: int) -> nn.Module:
        raise NotImplementedError(_NO_NEIGHBOURS)

    def conv(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
        groups: int = 1, bias: bool = True,
    ) -> nn.Module:  # fmt: skip
        raise NotImplementedError(_NO_NEIGHBOURS)

    def batch_norm(self, channels: int) -> nn.Module:
        raise NotImplementedError("token sequences use LayerNorm (TokenOps.norm)")

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return mixer


_NO_NEIGHBOURS = (
    "token sequences have no spatial neighbourhood; use DenseOps(ndim=1) for 1D convs and pools"
)


def init_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """FFNet/ConvNeXt initialisation: truncated normal weights, zero biases (use with ``.apply``)."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


if TYPE_CHECKING:  # mypy (CI) checks that each bundle implements the whole contract
    _dense: SpatialOps = DenseOps()
    _tokens: SpatialOps = TokenOps()


__all__ = [
    "ChannelsFirstAsTokens",
    "DenseOps",
    "LayerNormChannels",
    "PoolMinusInput",
    "PositionwiseProjections",
    "SpatialOps",
    "TokenOps",
    "init_trunc_normal",
]
