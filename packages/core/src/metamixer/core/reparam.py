"""Structural re-parameterization: training-time blocks that fold into one convolution.

The fusable blocks (``ConvBN``, ``BNConv``, ``PointwiseShortcut``, ``RepDWConv``) build their
convs through a ``ConvFactory`` (``DenseConvs`` for ordinary tensors) and implement
``reparameterize()`` (in place); ``reparameterize_model`` calls it on every such module of a model.  The kernel arithmetic below works for any number of
spatial dimensions; the weight layout is PyTorch's ``(out, in / groups, *kernel)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV_CLASSES: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM_CLASSES: dict[int, type[nn.Module]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}


def bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Per-channel ``(s, t)`` with ``bn(x) == s * x + t`` in eval mode."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"{bn} is not a BatchNorm and cannot be folded as one")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} tracks no running statistics and cannot be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Fold ``bn(conv(x))`` into one conv: returns the new ``(weight, bias)``."""
    scale, shift = bn_scale_shift(bn)
    view = (-1,) + (1,) * (weight.dim() - 1)
    if bias is None:
        bias = torch.zeros_like(shift)
    return weight * scale.view(view), bias * scale + shift


def fuse_bn_pointwise(bn: nn.Module, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fold ``conv(bn(x))`` into one conv, for a dense (groups=1) kernel-1 conv or linear layer."""
    if any(k != 1 for k in weight.shape[2:]):
        raise ValueError("BN -> conv folds exactly only for kernel size 1 (padding sees no BN)")
    scale, shift = bn_scale_shift(bn)
    view = (1, -1) + (1,) * (weight.dim() - 2)
    new_bias = weight.flatten(1) @ shift
    if bias is not None:
        new_bias = new_bias + bias
    return weight * scale.view(view), new_bias


def pad_kernel(weight: Tensor, kernel_size: int) -> Tensor:
    """Zero-pad an odd square/cubic kernel symmetrically to ``kernel_size`` (centres stay aligned)."""
    small = weight.shape[-1]
    if (kernel_size - small) % 2:
        raise ValueError(
            f"cannot centre a {small}-kernel in a {kernel_size}-kernel: both must be odd"
        )
    p = (kernel_size - small) // 2
    return F.pad(weight, [p, p] * (weight.dim() - 2))


def identity_kernel(channels: int, in_per_group: int, kernel_size: int, ndim: int) -> Tensor:
    """The kernel of a conv that returns its input (stride 1, padding ``kernel_size // 2``)."""
    weight = torch.zeros((channels, in_per_group) + (kernel_size,) * ndim)
    centre = (kernel_size // 2,) * ndim
    for c in range(channels):
        weight[(c, c % in_per_group, *centre)] = 1.0
    return weight


class ConvFactory(Protocol):
    """How a tensor layout builds the convolutions and BatchNorms of its fusable blocks (the part
    of the ops contract ``metamixer.core.ops.SpatialOps`` that re-parameterization needs).

    ``conv`` returns a module with ``weight (out, in / groups, *k)`` and ``bias``; ``batch_norm``
    a BatchNorm over the conv's output channels; ``ndim`` counts the spatial dimensions.
    """

    @property
    def ndim(self) -> int: ...

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int,
        groups: int,
        bias: bool,
    ) -> nn.Module: ...

    def batch_norm(self, channels: int) -> nn.Module: ...


@dataclass(frozen=True)
class DenseConvs:
    """``nn.Conv{1,2,3}d`` with padding ``k // 2`` and the matching ``nn.BatchNorm{1,2,3}d``."""

    ndim: int = 2

    def __post_init__(self) -> None:
        if self.ndim not in CONV_CLASSES:
            raise ValueError(f"ndim must be 1, 2 or 3, got {self.ndim}")

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> nn.Module:
        return CONV_CLASSES[self.ndim](
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=bias,
        )

    def batch_norm(self, channels: int) -> nn.Module:
        return BATCHNORM_CLASSES[self.ndim](channels)


class FusableConv(nn.Module):
    """Base for training-time blocks that equal one convolution in eval mode.

    Subclasses build their branches with ``self.convs`` and implement ``forward_branches`` and
    ``equivalent_kernel_bias``.  After ``reparameterize()`` the branches are gone and ``self.fused``
    (one conv of the same family and grouping, with bias) does the work.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        convs: ConvFactory,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size must be odd (got {kernel_size}) so that padding is k // 2"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.convs, self.ndim = convs, convs.ndim
        self.fused: nn.Module | None = None

    def forward_branches(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The ``(weight, bias)`` of the single equivalent conv, folded or not."""
        if self.fused is None:
            return self.equivalent_kernel_bias()
        return _weight(self.fused), _weight(self.fused, "bias")

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fused
        return self.forward_branches(x) if fused is None else fused(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        weight, bias = self.equivalent_kernel_bias()
        for name in list(self._modules):
            delattr(self, name)
        conv = self.convs.conv(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            groups=self.groups,
            bias=True,
        ).to(weight)
        _weight(conv).copy_(weight)
        _weight(conv, "bias").copy_(bias)
        self.fused = conv


def _weight(conv: nn.Module, name: str = "weight") -> Tensor:
    """A conv module's ``weight`` (or ``bias``) parameter, typed."""
    value = getattr(conv, name)
    if not isinstance(value, Tensor):
        raise TypeError(f"{type(conv).__name__}.{name} is not a tensor")
    return value


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
        convs: ConvFactory | None = None,
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
        return fuse_conv_bn(_weight(self.conv), None, self.bn)


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
        bias: Tensor | None = getattr(self.conv, "bias", None)
        return fuse_bn_pointwise(self.bn, _weight(self.conv), bias)


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
        convs: ConvFactory | None = None,
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
        self.large = ConvBN(in_channels, out_channels, kernel_size, convs=convs, stride=stride,
                            groups=in_channels)  # fmt: skip
        self.small = ConvBN(in_channels, out_channels, small_kernel, convs=convs, stride=stride,
                            groups=in_channels)  # fmt: skip

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.large(x) + self.small(x)

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        w_large, b_large = self.large.kernel_bias()
        w_small, b_small = self.small.kernel_bias()
        return w_large + pad_kernel(w_small, self.kernel_size), b_large + b_small


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Fold every re-parameterizable module of ``model`` in place and return it.

    A module takes part by defining ``reparameterize()``; children are folded before their parents.
    The output in eval mode is unchanged; BatchNorms that sit in foldable positions disappear.
    """
    for module in reversed(list(model.modules())):  # pre-order reversed: children first
        fold = getattr(module, "reparameterize", None)
        if callable(fold):
            fold()
    return model
