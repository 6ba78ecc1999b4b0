"""The sparse ops bundle: ``metamixer.core``'s mixers on voxel features ``(N, C)``.

``SparseOps(slot)`` realises depthwise convs as true sparse depthwise submanifold convs (or, with
``full=True``, as the authors' full ``C → C`` submanifold convs), pointwise projections as
linear layers, and norms as BatchNorm1d / LayerNorm over the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metamixer.core import ConvBN, RepDWConv
from metamixer.core.ops import PositionwiseProjections

from .sparse import SparseDepthwiseConv, SparseFullConv, StructureSlot


def batch_norm(channels: int) -> nn.BatchNorm1d:
    """The authors' BatchNorm for sparse features (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


@dataclass(frozen=True)
class SparseDepthwiseConvs:
    """Conv family for ``metamixer.core``'s fusable blocks: sparse depthwise convs + BatchNorm1d."""

    slot: StructureSlot
    ndim: int = 3

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
        if not in_channels == out_channels == groups or stride != 1:
            raise ValueError(
                "sparse convs here are depthwise submanifold convs: in = out = groups, stride 1"
            )
        return SparseDepthwiseConv(in_channels, kernel_size, self.slot, bias=bias)

    def batch_norm(self, channels: int) -> nn.Module:
        return batch_norm(channels)


class SparseAvgPool(nn.Module):
    """Mean of the active voxels in the ``k³`` neighbourhood (PoolFormer's pool on sparse data)."""

    def __init__(self, kernel_size: int, slot: StructureSlot) -> None:
        super().__init__()
        self.kernel_size, self.slot = kernel_size, slot

    def forward(self, x: Tensor) -> Tensor:
        table = self.slot.get().neighbours(self.kernel_size)
        padded = torch.cat([x, x.new_zeros(1, x.shape[1])])
        total = sum(padded.index_select(0, t) for t in table)
        count = (table < len(x)).sum(0, keepdim=True).t().to(x)
        return total / count


class SceneDropPath(nn.Module):
    """Stochastic depth per scene: all voxels of a dropped scene lose the branch together."""

    def __init__(self, p: float, slot: StructureSlot) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p, self.slot = p, slot

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        s = self.slot.get()
        keep = x.new_empty(s.batch_size).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * keep[s.batch][:, None]

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class SparseOps(PositionwiseProjections):
    """Ops bundle for ``metamixer.core`` mixers on sparse voxel features ``(N, C)``.

    ``full=True`` builds the authors' full ``C → C`` submanifold convs instead of depthwise ones.
    """

    slot: StructureSlot
    full: bool = False
    channel_axis: int = -1

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
        if stride != 1 or out_dim not in (None, dim):
            raise ValueError("sparse depthwise convs keep the channels and the voxels (stride 1)")
        convs = SparseDepthwiseConvs(self.slot)
        if self.full:
            conv = SparseFullConv(dim, dim, kernel_size, self.slot, bias=True)
            return nn.Sequential(conv, batch_norm(dim)) if norm or small_kernel else conv
        if small_kernel is not None:
            return RepDWConv(dim, kernel_size, small_kernel, convs=convs)
        if norm:
            return ConvBN(dim, dim, kernel_size, groups=dim, convs=convs)
        return SparseDepthwiseConv(dim, kernel_size, self.slot, bias=True)

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        if norm:
            return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), batch_norm(out_dim))
        return nn.Linear(in_dim, out_dim, bias=bias)

    def norm(self, dim: int, kind: str = "layer") -> nn.Module:
        if kind == "layer":
            return nn.LayerNorm(dim)
        if kind == "batch":
            return batch_norm(dim)
        raise ValueError(f"unknown norm kind {kind!r}; valid: 'layer', 'batch'")

    def avg_pool(self, kernel_size: int) -> nn.Module:
        return SparseAvgPool(kernel_size, self.slot)

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return SceneTokens(mixer, self.slot)


#: The most voxels of one scene at one level that a token-sequence mixer (self-attention) may see:
#: its cost grows with the square of the count (4096² coefficients = 64 MiB per head in float32).
MAX_SCENE_TOKENS = 4096


class SceneTokens(nn.Module):
    """Run a ``(B, N, C)`` token mixer on each scene's voxels of the current level as one sequence.

    Attention over every voxel of a scene is quadratic in its voxel count: levels whose scenes
    hold more than ``max_tokens`` voxels are refused, naming the count (use attention at the
    coarse levels, as CAFormer does at its late stages).
    """

    def __init__(
        self, mixer: nn.Module, slot: StructureSlot, max_tokens: int = MAX_SCENE_TOKENS
    ) -> None:
        super().__init__()
        self.mixer, self.slot, self.max_tokens = mixer, slot, max_tokens

    def forward(self, x: Tensor) -> Tensor:
        s = self.slot.get()
        counts = torch.bincount(s.batch.long(), minlength=s.batch_size)
        if int(counts.max()) > self.max_tokens:
            raise ValueError(
                f"self-attention over {int(counts.max())} voxels of one scene at this level "
                f"exceeds the limit of {self.max_tokens}: use attention only at coarser levels "
                "(e.g. token_mixers with 'attention' in the last encoder stages) or smaller crops"
            )
        parts = x.split(counts.tolist())  # a level's voxels are ordered by scene
        return torch.cat([self.mixer(p[None])[0] if len(p) else p for p in parts])
