"""Structural re-parameterization: training-time branches folded into one convolution.

Every module that can be folded implements ``reparameterize()`` (in place).  ``reparameterize_model``
calls it on every such module of a model.  The kernel arithmetic below works for any number of
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


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Per-channel ``(s, t)`` with ``bn(x) == s * x + t`` in eval mode."""
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


class ConvFamily(Protocol):
    """Builds the convolutions and BatchNorms of one tensor layout (dense 1D/2D/3D, sparse 3D).

    ``conv`` returns a module with ``weight (out, in / groups, *k)`` and ``bias``; ``batch_norm``
    a BatchNorm over the conv's output channels.
    """

    ndim: int

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
        convs: ConvFamily,
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
        return self.fused.weight, self.fused.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is None:
            return self.forward_branches(x)
        return self.fused(x)

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
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.fused = conv


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
