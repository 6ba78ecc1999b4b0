"""Dense spatial operations for 1D, 2D and 3D channels-first tensors ``(B, C, *spatial)``.

A modality hands an *ops bundle* to the mixer constructors in ``instances.py``; the bundle decides how
a depthwise conv, a pointwise projection, a norm or a pool is realised.  ``DenseOps(ndim)`` is the one
for ordinary tensors, ``TokenOps`` for ``(B, N, C)`` token sequences; the point-cloud package supplies
a sparse one with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .reparam import (
    BATCHNORM_CLASSES,
    CONV_CLASSES,
    ConvFamily,
    DenseConvs,
    FusableConv,
    fuse_bn_pointwise,
    fuse_conv_bn,
    identity_kernel,
    pad_kernel,
)

POOL_CLASSES: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


class ConvBN(FusableConv):
    """``BN(conv(x))`` with a bias-free conv; folds into one conv with bias.

    ``convs`` chooses the conv family (default: dense with ``ndim`` spatial dimensions).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        ndim: int = 2,
        stride: int = 1,
        groups: int = 1,
        convs: ConvFamily | None = None,
    ) -> None:
        convs = DenseConvs(ndim) if convs is None else convs
        super().__init__(
            in_channels, out_channels, kernel_size, convs=convs, stride=stride, groups=groups
        )
        self.conv = convs.conv(
            in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False
        )
        self.bn = convs.batch_norm(out_channels)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        return fuse_conv_bn(self.conv.weight, None, self.bn)


class BNConv(FusableConv):
    """``conv1x1(BN(x))``; the BN folds into the pointwise conv's weight and bias."""

    def __init__(
        self, in_channels: int, out_channels: int, *, ndim: int = 2, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, 1, convs=DenseConvs(ndim))
        self.bn = BATCHNORM_CLASSES[ndim](in_channels)
        self.conv = CONV_CLASSES[ndim](in_channels, out_channels, 1, bias=bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.conv(self.bn(x))

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        return fuse_bn_pointwise(self.bn, self.conv.weight, self.conv.bias)


class PointwiseShortcut(FusableConv):
    """``x + conv1x1(BN(x))``: the identity shortcut folds into the pointwise kernel."""

    def __init__(self, dim: int, *, ndim: int = 2) -> None:
        super().__init__(dim, dim, 1, convs=DenseConvs(ndim))
        self.proj = BNConv(dim, dim, ndim=ndim)

    def forward_branches(self, x: Tensor) -> Tensor:
        return x + self.proj(x)

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        weight, bias = self.proj.kernel_bias()
        return weight + identity_kernel(self.out_channels, self.in_channels, 1, self.ndim).to(
            weight
        ), bias


class RepDWConv(FusableConv):
    """Depthwise conv trained as a large and a small parallel kernel, each followed by BN.

    ``out_channels`` may be a multiple of ``in_channels`` (groups = in_channels), as in FFNet's
    downsampling layer.  Folds into one ``kernel_size`` depthwise conv with bias.  ``convs``
    chooses the conv family (default: dense with ``ndim`` spatial dimensions).
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        small_kernel: int,
        *,
        out_channels: int | None = None,
        ndim: int = 2,
        stride: int = 1,
        convs: ConvFamily | None = None,
    ) -> None:
        convs = DenseConvs(ndim) if convs is None else convs
        out_channels = in_channels if out_channels is None else out_channels
        if out_channels % in_channels:
            raise ValueError(f"out_channels ({out_channels}) must be a multiple of {in_channels}")
        if not (small_kernel % 2 == 1 and small_kernel < kernel_size):
            raise ValueError(
                f"small_kernel must be odd and smaller than kernel_size ({kernel_size}), "
                f"got {small_kernel}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, convs=convs, stride=stride, groups=in_channels
        )
        branch = dict(convs=convs, stride=stride, groups=in_channels)
        self.large = ConvBN(in_channels, out_channels, kernel_size, **branch)
        self.small = ConvBN(in_channels, out_channels, small_kernel, **branch)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.large(x) + self.small(x)

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        w_large, b_large = self.large.kernel_bias()
        w_small, b_small = self.small.kernel_bias()
        return w_large + pad_kernel(w_small, self.kernel_size), b_large + b_small


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

    def query(self, dim: int, *, norm: bool = False) -> nn.Module:
        """A pointwise projection with bias, or bias-free + norm (foldable) with ``norm``."""
        return self.pointwise(dim, dim, norm=norm, bias=not norm)

    def project(self, in_dim: int, out_dim: int) -> nn.Module:
        return self.pointwise(in_dim, out_dim)

    def channels(self, dim: int) -> int:
        return dim


@dataclass(frozen=True)
class DenseOps(PositionwiseProjections):
    """Spatial ops on channels-first dense tensors with ``ndim`` spatial dimensions."""

    ndim: int = 2
    channel_axis: int = 1

    def __post_init__(self) -> None:
        if self.ndim not in CONV_CLASSES:
            raise ValueError(f"DenseOps.ndim must be 1, 2 or 3, got {self.ndim}")

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
        return DenseConvs(self.ndim).conv(
            dim, out_dim, kernel_size, stride=stride, groups=dim, bias=True
        )

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
    """Ops on channels-last token sequences ``(..., N, C)``: linear layers and LayerNorm only."""

    channel_axis: int = -1

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

    def depthwise(self, dim: int, kernel_size: int) -> nn.Module:
        """Not available: a token sequence carries no spatial layout."""
        raise NotImplementedError(
            "token sequences have no spatial neighbourhood; use DenseOps(ndim=1) for 1D convs"
        )

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return mixer


def init_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """FFNet/ConvNeXt initialisation: truncated normal weights, zero biases (use with ``.apply``)."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


__all__ = [
    "BNConv",
    "ChannelsFirstAsTokens",
    "ConvBN",
    "DenseOps",
    "LayerNormChannels",
    "PointwiseShortcut",
    "PoolMinusInput",
    "PositionwiseProjections",
    "RepDWConv",
    "TokenOps",
    "init_trunc_normal",
]
