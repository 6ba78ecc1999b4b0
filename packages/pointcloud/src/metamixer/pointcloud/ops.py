"""The sparse ops bundle: ``metamixer.core``'s mixers on voxel features ``(N, C)``.

``SparseOps()`` realises depthwise convs as true sparse depthwise submanifold convs (or, with
``full=True``, as the authors' full ``C → C`` submanifold convs), pointwise projections as
linear layers, and norms as BatchNorm1d / LayerNorm over the features.  Every module maps a
``SparseTensor`` to a ``SparseTensor``: sparse ones read the voxel structure from their input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from metamixer.core import ConvBN, RepDWConv
from metamixer.core.ops import PositionwiseProjections, SpatialOps

from .sparse import SparseDepthwiseConv, SparseFullConv, SparseTensor


def batch_norm(channels: int) -> nn.BatchNorm1d:
    """The authors' BatchNorm for sparse features (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


@dataclass(frozen=True)
class SparseDepthwiseConvs:
    """Conv family for ``metamixer.core``'s fusable blocks: sparse depthwise convs + BatchNorm1d."""

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
        return SparseDepthwiseConv(in_channels, kernel_size, bias=bias)

    def batch_norm(self, channels: int) -> nn.Module:
        return batch_norm(channels)


class SparseAvgPool(nn.Module):
    """Mean of the active voxels in the ``k³`` neighbourhood (PoolFormer's pool on sparse data)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: SparseTensor) -> SparseTensor:
        table = x.structure.neighbours(self.kernel_size)
        f = x.features
        padded = torch.cat([f, f.new_zeros(1, f.shape[1])])
        total = sum(padded.index_select(0, t) for t in table)
        count = (table < len(f)).sum(0, keepdim=True).t().to(f)
        return x.replace(total / count)


class SceneDropPath(nn.Module):
    """Stochastic depth per scene: all voxels of a dropped scene lose the branch together."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not self.training or self.p == 0.0:
            return x
        s = x.structure
        keep = x.features.new_empty(s.batch_size).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * keep[s.batch][:, None]

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class SparseOps(SparseDepthwiseConvs, PositionwiseProjections):
    """Ops bundle (``metamixer.core.ops.SpatialOps``) for mixers on sparse voxel features.

    ``full=True`` builds the authors' full ``C → C`` submanifold convs (followed by BN with
    ``norm``; they have no small-kernel branch) instead of depthwise ones.
    """

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
        if self.full:
            if small_kernel is not None:
                raise ValueError(
                    "the authors' full sparse convs have no small-kernel branch: "
                    "use small_kernel=None (norm=True for conv + BN)"
                )
            conv = SparseFullConv(dim, dim, kernel_size, bias=True)
            return nn.Sequential(conv, batch_norm(dim)) if norm else conv
        if small_kernel is not None:
            return RepDWConv(dim, kernel_size, small_kernel, convs=self)
        if norm:
            return ConvBN(dim, dim, kernel_size, groups=dim, convs=self)
        return SparseDepthwiseConv(dim, kernel_size, bias=True)

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
        return SparseAvgPool(kernel_size)

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return SceneTokens(mixer)


#: The most voxels of one scene at one level that a token-sequence mixer (self-attention) may see:
#: its cost grows with the square of the count (4096² coefficients = 64 MiB per head in float32).
MAX_SCENE_TOKENS = 4096


class SceneTokens(nn.Module):
    """Run a ``(B, N, C)`` token mixer on each scene's voxels of the current level as one sequence.

    Attention over every voxel of a scene is quadratic in its voxel count: levels whose scenes
    hold more than ``max_tokens`` voxels are refused, naming the count (use attention at the
    coarse levels, as CAFormer does at its late stages).
    """

    def __init__(self, mixer: nn.Module, max_tokens: int = MAX_SCENE_TOKENS) -> None:
        super().__init__()
        self.mixer, self.max_tokens = mixer, max_tokens

    def forward(self, x: SparseTensor) -> SparseTensor:
        s = x.structure
        counts = torch.bincount(s.batch.long(), minlength=s.batch_size)
        if int(counts.max()) > self.max_tokens:
            raise ValueError(
                f"self-attention over {int(counts.max())} voxels of one scene at this level "
                f"exceeds the limit of {self.max_tokens}: use attention only at coarser levels "
                "(e.g. token_mixers with 'attention' in the last encoder stages) or smaller crops"
            )
        parts = x.features.split(counts.tolist())  # a level's voxels are ordered by scene
        return x.replace(torch.cat([self.mixer(p[None])[0] if len(p) else p for p in parts]))


if TYPE_CHECKING:  # mypy (CI) checks that the bundle implements the whole contract
    _sparse: SpatialOps = SparseOps()
