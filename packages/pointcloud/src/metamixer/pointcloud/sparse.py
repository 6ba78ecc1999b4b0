"""Sparse voxel structure and true depthwise submanifold convolutions on spconv's neighbour maps.

A ``SparseStructure`` holds the voxels of one resolution level (integer coordinates, scene index)
and caches, per kernel size, the neighbour table computed once from spconv's submanifold indice
pairs.  Modules of a stage read the current structure from a shared ``StructureSlot`` that the
stage fills before running its blocks, so channel-wise ops act on plain ``(N, C)`` features and
every block of the stage reuses the same maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


class StructureSlot:
    """The structure of the level a stage is currently running on (shared by its modules)."""

    def __init__(self) -> None:
        self.structure: SparseStructure | None = None

    def get(self) -> SparseStructure:
        if self.structure is None:
            raise RuntimeError("no sparse structure set: run sparse modules through their stage")
        return self.structure


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
    ``nn.Conv3d(C, C, k, groups=C)``, on the structure of the slot's current level."""

    def __init__(
        self, channels: int, kernel_size: int, slot: StructureSlot, bias: bool = True
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels, self.kernel_size, self.slot = channels, kernel_size, slot
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected features (N, {self.channels}), got {tuple(x.shape)}")
        structure = self.slot.get()
        if structure.num_voxels != len(x):
            raise ValueError(f"{len(x)} feature rows for {structure.num_voxels} voxels")
        weight = self.weight.view(self.channels, -1).t()
        return sparse_depthwise(x, weight, structure.pairs(self.kernel_size), self.bias)

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
        slot: StructureSlot,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.slot = kernel_size, slot
        self.weight = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        table = self.slot.get().neighbours(self.kernel_size)
        padded = torch.cat([x, x.new_zeros(1, x.shape[1])])
        out = (
            x.new_zeros(len(x), self.weight.shape[2])
            if self.bias is None
            else self.bias.expand(len(x), -1)
        )
        for k in range(len(table)):
            out = torch.addmm(out, padded.index_select(0, table[k]), self.weight[k])
        return out


__all__ = [
    "SparseDepthwiseConv",
    "SparseFullConv",
    "SparseStructure",
    "StructureSlot",
    "sparse_depthwise",
]
