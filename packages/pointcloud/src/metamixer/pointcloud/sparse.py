"""Sparse voxel structure and true depthwise submanifold convolutions on spconv's neighbour maps.

A ``SparseStructure`` holds the voxels of one resolution level (integer coordinates, scene index)
and caches, per kernel size, the neighbour table computed once from spconv's submanifold indice
pairs.  A ``SparseTensor`` carries features ``(N, C)`` together with their structure through the
network (like spconv's ``SparseConvTensor``): sparse modules read the structure from their input,
and every other op (linear layers, norms, activations, sums) sees the features, so a level's
blocks share its maps and any module runs on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._spconv import spconv


@dataclass
class SparseStructure:
    """Active voxels of a batch of scenes at one resolution.

    Attributes:
        coords: ``(N, 3)`` integer voxel coordinates (non-negative).
        batch: ``(N,)`` scene index of each voxel.
        batch_size: number of scenes.
    """

    coords: Tensor
    batch: Tensor
    batch_size: int
    _neighbours: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _pairs: dict[int, list[tuple[Tensor, Tensor]]] = field(default_factory=dict, repr=False)
    indice_dict: dict = field(default_factory=dict, repr=False)  # spconv's cache for full convs

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.coords.shape[1] != 3:
            raise ValueError(f"coords must be (N, 3), got {tuple(self.coords.shape)}")
        if len(self.coords) == 0:
            raise ValueError("empty point cloud: a scene needs at least one voxel")
        if (self.coords < 0).any():
            raise ValueError("voxel coordinates must be non-negative (shift the scene first)")

    @property
    def num_voxels(self) -> int:
        return len(self.coords)

    @property
    def spatial_shape(self) -> list[int]:
        return (self.coords.max(0).values + 1).tolist()

    def spconv_indices(self) -> Tensor:
        """``(N, 4)`` int32 ``[batch, x, y, z]`` as spconv expects."""
        return torch.cat([self.batch[:, None], self.coords], 1).int()

    def neighbours(self, kernel_size: int) -> Tensor:
        """``(K³, N)`` table: input voxel at offset ``k`` of each output voxel, ``N`` if absent.

        Offsets are ordered like a dense ``conv3d`` kernel (x slowest), so ``weight.view(C, K³)``
        of a ``(C, 1, k, k, k)`` depthwise kernel lines up.  Built from spconv's submanifold pairs.
        """
        if kernel_size % 2 != 1:
            raise ValueError(f"sparse kernels must be odd, got {kernel_size}")
        if kernel_size not in self._neighbours:
            self._neighbours[kernel_size] = self._build_neighbours(kernel_size)
        return self._neighbours[kernel_size]

    def pairs(self, kernel_size: int) -> list[tuple[Tensor, Tensor]]:
        """Per kernel offset, the ``(output rows, input rows)`` of the existing neighbours (the
        centre offset, the identity, included); output rows ascending."""
        if kernel_size not in self._pairs:
            table, n = self.neighbours(kernel_size), self.num_voxels
            self._pairs[kernel_size] = [(torch.nonzero(t < n).squeeze(1), t[t < n]) for t in table]
        return self._pairs[kernel_size]

    def _build_neighbours(self, k: int) -> Tensor:
        n, volume = self.num_voxels, k**3
        _, pairs, _ = spconv.ops.get_indice_pairs(
            self.spconv_indices(), self.batch_size, self.spatial_shape,
            spconv.ConvAlgo.Native, [k] * 3, [1] * 3, [k // 2] * 3, [1] * 3, [0] * 3, subm=True,
        )  # fmt: skip
        pairs = pairs.long()
        table = torch.full((volume, n), n, dtype=torch.long, device=self.coords.device)
        centre = volume // 2
        table[centre] = torch.arange(n, device=self.coords.device)
        for offset in range(volume):
            if offset == centre:
                continue
            src, dst = pairs[0, offset], pairs[1, offset]
            valid = (src >= 0) & (dst >= 0)
            if valid.any():
                table[offset, dst[valid]] = src[valid]
        # spconv fills one offset of each mirrored pair only; submanifold maps are symmetric:
        # voxel i is at offset k of voxel o exactly when o is at offset K³-1-k of voxel i.
        for offset in range(volume):
            mirror = volume - 1 - offset
            if offset != centre and (table[offset] == n).all() and (table[mirror] < n).any():
                has = table[mirror] < n
                table[offset, table[mirror][has]] = torch.arange(n, device=table.device)[has]
        return table


class SparseTensor:
    """Voxel features ``(N, C)`` and the ``SparseStructure`` of their N voxels, as one value.

    Any torch function given a ``SparseTensor`` runs on its features (``__torch_function__``); a
    result with one row per voxel comes back as a ``SparseTensor`` on the same structure, anything
    else (reductions, other shapes) as a plain tensor.  Combining tensors of two different
    structures is refused.  ``replace(features)`` makes a new one on the same structure.
    """

    __slots__ = ("features", "structure")

    def __init__(self, features: Tensor, structure: SparseStructure) -> None:
        if features.dim() != 2 or len(features) != structure.num_voxels:
            raise ValueError(
                f"features of shape {tuple(features.shape)} for a structure of "
                f"{structure.num_voxels} voxels: need one feature row per voxel, (N, C)"
            )
        self.features, self.structure = features, structure

    def replace(self, features: Tensor) -> SparseTensor:
        return SparseTensor(features, self.structure)

    @property
    def shape(self) -> torch.Size:
        return self.features.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    @property
    def device(self) -> torch.device:
        return self.features.device

    def dim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return f"SparseTensor(features={tuple(self.features.shape)}, batch_size={self.structure.batch_size})"

    @classmethod
    def __torch_function__(
        cls, func: Callable, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        structures: list[SparseStructure] = []

        def unwrap(value: Any) -> Any:
            if isinstance(value, SparseTensor):
                structures.append(value.structure)
                return value.features
            if isinstance(value, (list, tuple)):
                return type(value)(unwrap(v) for v in value)
            return value

        args, kwargs = unwrap(args), {k: unwrap(v) for k, v in (kwargs or {}).items()}
        structure = structures[0]
        for other in structures[1:]:
            if other is not structure:
                raise ValueError(
                    f"{func.__name__} combines sparse tensors of two structures "
                    f"({structure.num_voxels} and {other.num_voxels} voxels)"
                )
        result = func(*args, **kwargs)
        if isinstance(result, Tensor) and result.dim() == 2 and len(result) == structure.num_voxels:
            return SparseTensor(result, structure)
        return result

    def _binary(self, func: Callable, other: Any) -> Any:
        return SparseTensor.__torch_function__(func, (), (self, other))

    def __add__(self, other: Any) -> Any:
        return self._binary(torch.add, other)

    __radd__ = __add__

    def __mul__(self, other: Any) -> Any:
        return self._binary(torch.mul, other)

    __rmul__ = __mul__

    def __sub__(self, other: Any) -> Any:
        return self._binary(torch.sub, other)

    def __truediv__(self, other: Any) -> Any:
        return self._binary(torch.div, other)


class _SparseDepthwise(torch.autograd.Function):
    """``out[o] = Σ_k w[k] ⊙ x[i]`` over the neighbour pairs ``(o, i)`` of each offset ``k``.

    Per offset: gather the input rows into a reused buffer, scale by the offset's per-channel
    weights, add into the output rows.  The backward pass reuses each gathered output-gradient
    block for both the weight gradient and the input gradient (the pairs, swapped, are exactly
    those of the mirrored offset in a submanifold conv).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, pairs: list, centre: int, add
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.pairs, ctx.centre, ctx.has_bias, ctx.add = pairs, centre, bias is not None, add
        out = x * weight[centre] if bias is None else torch.addcmul(bias, x, weight[centre])
        buffer = x.new_empty(max(len(src) for _, src in pairs), x.shape[1])
        for k, (rows, src) in enumerate(pairs):
            if k != centre and len(src):
                block = torch.index_select(x, 0, src, out=buffer[: len(src)])
                add(out, rows, block.mul_(weight[k]))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        pairs, centre = ctx.pairs, ctx.centre
        grad_x = grad * weight[centre]
        grad_w = weight.new_empty(weight.shape)
        torch.sum(x * grad, 0, out=grad_w[centre])
        size = max(len(src) for _, src in pairs)
        g_buf, x_buf = grad.new_empty(size, grad.shape[1]), x.new_empty(size, x.shape[1])
        for k, (rows, src) in enumerate(pairs):
            if k == centre:
                continue
            m = len(src)
            if m == 0:
                grad_w[k].zero_()
                continue
            g_block = torch.index_select(grad, 0, rows, out=g_buf[:m])
            x_block = torch.index_select(x, 0, src, out=x_buf[:m])
            torch.sum(x_block.mul_(g_block), 0, out=grad_w[k])
            ctx.add(grad_x, src, g_block.mul_(weight[k]))
        grad_b = grad.sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None, None, None


def _index_add(out: Tensor, index: Tensor, rows: Tensor) -> None:
    out.index_add_(0, index, rows)


def _torch_scatter_add(out: Tensor, index: Tensor, rows: Tensor) -> None:
    import torch_scatter

    torch_scatter.scatter_add(rows, index, dim=0, out=out)


SCATTER_ADD = {"native": _index_add, "torch_scatter": _torch_scatter_add}


def sparse_depthwise(
    x: Tensor,
    weight: Tensor,
    pairs: list[tuple[Tensor, Tensor]],
    bias: Tensor | None = None,
    scatter: str = "native",
) -> Tensor:
    """Depthwise submanifold conv of features ``x (N, C)`` with ``weight (K³, C)`` (+ ``bias``)
    over the neighbour ``pairs`` of ``SparseStructure.pairs``.

    ``scatter``: "native" (``index_add_``) or "torch_scatter"; measured equally fast on CPU
    (``benchmarks/pointcloud.py``), so native is the default and needs no extra package.
    """
    if scatter not in SCATTER_ADD:
        raise ValueError(f"scatter must be one of {sorted(SCATTER_ADD)}, got {scatter!r}")
    # accumulate in at least float32 (features arrive in bf16 / fp16 under autocast), return
    # x's dtype
    work = torch.promote_types(x.dtype, torch.float32)
    bias = None if bias is None else bias.to(work)
    out = _SparseDepthwise.apply(
        x.to(work), weight.to(work).contiguous(), bias, pairs, len(pairs) // 2, SCATTER_ADD[scatter]
    )
    return out.to(x.dtype)


class SparseDepthwiseConv(nn.Module):
    """Depthwise submanifold 3D conv: per-channel ``k³`` weights, ``(C, 1, k, k, k)`` like
    ``nn.Conv3d(C, C, k, groups=C)``; ``SparseTensor`` in, ``SparseTensor`` out."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor) or x.shape[1] != self.channels:
            raise ValueError(f"expected a SparseTensor with {self.channels} channels, got {x!r}")
        weight = self.weight.view(self.channels, -1).t()
        pairs = x.structure.pairs(self.kernel_size)
        return x.replace(sparse_depthwise(x.features, weight, pairs, self.bias))

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


class SparseFullConv(nn.Module):
    """Submanifold 3D conv with full channel mixing per offset (``C_in → C_out``, ``k³`` weights):
    ``out = Σ_k x[neighbour k] @ W_k``, on the same neighbour maps as the depthwise conv.

    Used for the stem and for the authors' full-conv blocks.  (spconv's own CPU ``SubMConv3d`` is
    not deterministic with more than one thread, so it is not used in the forward pass.)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: SparseTensor) -> SparseTensor:
        table = x.structure.neighbours(self.kernel_size)
        f = x.features
        padded = torch.cat([f, f.new_zeros(1, f.shape[1])])
        out = (
            f.new_zeros(len(f), self.weight.shape[2])
            if self.bias is None
            else self.bias.expand(len(f), -1)
        )
        for k in range(len(table)):
            out = torch.addmm(out, padded.index_select(0, table[k]), self.weight[k])
        return x.replace(out)


__all__ = [
    "SparseDepthwiseConv",
    "SparseFullConv",
    "SparseStructure",
    "SparseTensor",
    "sparse_depthwise",
]
