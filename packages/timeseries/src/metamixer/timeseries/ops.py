"""Ops on multivariate patch features ``(B, M·D, N)``: M variables × D features × N patches.

The channel axis is variable-major (channel ``m·D + d``).  ``VariableOps(M)`` is the ops bundle that
``metamixer.core``'s mixer constructors use: depthwise convs run along the patch axis per channel,
pointwise projections act per variable (groups = M), and BatchNorm is shared by the variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from metamixer.core import DenseOps
from metamixer.core.ops import SpatialOps

_DENSE_1D = DenseOps(ndim=1)


class SwapAxes(nn.Module):
    """Reorder channels ``(a, b)`` -> ``(b, a)`` of a ``(B, a·b, N)`` tensor."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: Tensor) -> Tensor:
        batch, _, n = x.shape
        return x.view(batch, self.a, self.b, n).transpose(1, 2).reshape(batch, -1, n)

    def extra_repr(self) -> str:
        return f"({self.a}, {self.b}) -> ({self.b}, {self.a})"


class SharedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the D features, statistics shared by the M variables of ``(B, M·D, N)``."""

    def __init__(self, features: int, num_vars: int) -> None:
        super().__init__(features)
        self.num_vars = num_vars

    def forward(self, x: Tensor) -> Tensor:
        batch, _, n = x.shape
        return super().forward(x.reshape(batch * self.num_vars, -1, n)).reshape(batch, -1, n)


@dataclass(frozen=True)
class VariableOps:
    """Spatial ops for ``(B, M·D, N)`` features; ``dim`` arguments count features per variable.

    ``query`` is the authors' cross-variable FFN (``query_mlp_ratio``, ``query_drop``,
    ``query_proj_drop``); ``project`` their grouped projection that mixes variables.
    """

    num_vars: int
    query_mlp_ratio: int = 2
    query_drop: float = 0.0
    query_proj_drop: float = 0.0
    channel_axis: int = 1
    ndim: int = 1

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
        """Depthwise conv along patches for every (variable, feature) channel."""
        m = self.num_vars
        out = None if out_dim is None else m * out_dim
        return _DENSE_1D.depthwise(
            m * dim, kernel_size, out_dim=out, stride=stride, small_kernel=small_kernel, norm=norm
        )

    def pointwise(
        self, in_dim: int, out_dim: int, *, norm: bool = False, bias: bool = True
    ) -> nn.Module:
        """Per-variable linear map of the features (a grouped 1×1 conv, groups = M)."""
        m = self.num_vars
        conv = nn.Conv1d(m * in_dim, m * out_dim, 1, groups=m, bias=bias and not norm)
        return nn.Sequential(conv, self.norm(out_dim)) if norm else conv

    def query(self, dim: int, *, norm: bool = False) -> nn.Module:
        """For every feature, an FFN over the M variables (M -> e·M), then a grouped projection
        back to D features per variable; dropout inside, shared BN after with ``norm``."""
        m, hidden = self.num_vars, self.query_mlp_ratio * self.num_vars
        return nn.Sequential(
            SwapAxes(m, dim),  # (M, D) -> (D, M): group by feature
            nn.Conv1d(dim * m, dim * hidden, 1, groups=dim),
            nn.Dropout(self.query_drop),
            nn.GELU(),
            SwapAxes(dim, hidden),  # (D, e·M) -> (e·M, D)
            nn.Conv1d(hidden * dim, m * dim, 1, groups=m),
            nn.Dropout(self.query_proj_drop),
            *([SharedBatchNorm(dim, m)] if norm else []),
        )

    def project(self, in_dim: int, out_dim: int) -> nn.Module:
        """Per-variable hidden ``(M, F)`` -> ``(M, D)``, each output feature d reading hidden
        units [d·F/D, (d+1)·F/D) of all M variables (the authors' grouping)."""
        m = self.num_vars
        return nn.Sequential(
            SwapAxes(m, in_dim),
            nn.Conv1d(in_dim * m, out_dim * m, 1, groups=out_dim),
            SwapAxes(out_dim, m),
        )

    def channels(self, dim: int) -> int:
        return self.num_vars * dim

    def norm(self, dim: int, kind: str = "batch") -> nn.Module:
        if kind != "batch":
            raise ValueError(f"VariableOps supports kind='batch' only, got {kind!r}")
        return SharedBatchNorm(dim, self.num_vars)

    def avg_pool(self, kernel_size: int) -> nn.Module:
        return _DENSE_1D.avg_pool(kernel_size)

    def conv(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
        groups: int = 1, bias: bool = True,
    ) -> nn.Module:  # fmt: skip
        """A conv over raw tensor channels (``M·dim``), as the fusable blocks build them."""
        return _DENSE_1D.conv(
            in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias
        )

    def batch_norm(self, channels: int) -> nn.Module:
        return _DENSE_1D.batch_norm(channels)

    def as_tokens(self, mixer: nn.Module) -> nn.Module:
        return _DENSE_1D.as_tokens(mixer)


class RevIN(nn.Module):
    """Reversible instance normalisation over time, per series and variable, for ``(B, L, M)``.

    ``normalize`` stores the statistics that ``denormalize`` uses on the forecast.
    """

    def __init__(self, num_vars: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_vars))
            self.bias = nn.Parameter(torch.zeros(num_vars))

    def normalize(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        mean = x.mean(1, keepdim=True).detach()
        std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine:
            x = x * self.weight + self.bias
        return x, (mean, std)

    def denormalize(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        mean, std = stats
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


if TYPE_CHECKING:  # mypy (CI) checks that the bundle implements the whole contract
    _variables: SpatialOps = VariableOps(num_vars=1)
