"""CPU variants of standard modules, swapped in by the passes of ``metamixer.core.deploy``.

Each keeps the parameters (names and shapes) of the module it replaces and computes the same
function up to float rounding; the CPU fast path runs only in eager mode on CPU, and the ordinary op
runs on GPU and while tracing, scripting, compiling or exporting.  Models never build these
themselves: a pass swaps them in, so leaving the pass out leaves the model as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mixer import MetaMixer


def eager_on_cpu(x: Tensor) -> bool:
    """True where a CPU-only eager fast path may replace the ordinary op (not on GPU, and not
    while tracing, scripting or compiling, which must see the ordinary op)."""
    return x.device.type == "cpu" and not (
        torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
    )


def banded_matrix(weight: Tensor, length: int) -> Tensor:
    """``(C, 1, k)`` depthwise kernel -> ``(C, L, L)`` matrix ``M`` with ``conv1d(x) == x @ M``.

    Row ``j`` (input position) column ``i`` (output position) holds ``weight[c, 0, j - i + k // 2]``
    inside the band, zero outside (the conv's zero padding).  Built from sliding windows over the
    zero-padded, reversed kernel (several times faster to differentiate than a gather).
    """
    kernel = weight.shape[-1]
    reversed_padded = F.pad(weight[:, 0], (length - 1, length - 1)).flip(-1)
    windows = reversed_padded.unfold(-1, length, 1)
    return windows[:, kernel // 2 : kernel // 2 + length].flip(1)


class BandedDepthwiseConv1d(nn.Conv1d):
    """A depthwise ``nn.Conv1d`` (stride 1, odd k, padding k // 2) whose CPU forward, when the
    sequence is at most twice the kernel, multiplies by ``banded_matrix`` instead of convolving."""

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv1d
            and conv.groups == conv.in_channels == conv.out_channels
            and conv.stride == (1,)
            and conv.dilation == (1,)
            and conv.kernel_size[0] % 2 == 1
            and conv.padding == (conv.kernel_size[0] // 2,)
            and conv.padding_mode == "zeros"
        )

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        if length > 2 * self.kernel_size[0] or not eager_on_cpu(x):
            return super().forward(x)
        out = torch.matmul(x.transpose(0, 1), banded_matrix(self.weight, length)).transpose(0, 1)
        return out if self.bias is None else out + self.bias[:, None]


class IntegerMaskDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU keep mask compares 15-bit random integers with ``(1 - p)·2¹⁵``
    (same distribution up to rounding p to a multiple of 2⁻¹⁵; cheaper to draw than
    ``bernoulli_``)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or not eager_on_cpu(x):
            return super().forward(x)
        threshold = round((1.0 - self.p) * 2**15)
        if threshold == 0:
            return x * 0.0
        draws = torch.empty(x.shape, dtype=torch.int16).random_()
        return x * (draws < threshold).to(x.dtype).mul_(2**15 / threshold)


class InplaceGELU(nn.GELU):
    """``nn.GELU`` that overwrites its input when no gradient is recorded (one buffer fewer).
    Only for inputs nothing else reads afterwards: ``deploy.inplace_activations`` checks that."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def interleave_channels(parts: Sequence[Tensor], dim: int = 1) -> Tensor:
    """Entry ``c·r + j`` along ``dim`` is entry ``c`` of ``parts[j]`` (r parts).

    Channels-last parts give a channels-last result.
    """
    first = parts[0]
    channels_last = first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    if dim == 1 and channels_last and not first.is_contiguous():
        return torch.stack([p.movedim(1, 3) for p in parts], 4).flatten(3).movedim(3, 1)
    return torch.stack(list(parts), dim + 1).flatten(dim, dim + 1)


class InterleavedDepthwise(nn.Module):
    """A depthwise conv with channel multiplier r (``groups == in``, ``out == r·in``) as r pure
    depthwise convs, the j-th making output channels ``c·r + j`` (oneDNN has fast kernels only
    for pure depthwise convs)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        if not self.fits(conv):
            raise ValueError(f"{conv} is not a depthwise conv with a channel multiplier")
        conv = cast(nn.Conv2d, conv)  # or Conv1d / Conv3d: the same attributes
        make: Any = type(conv)
        r = conv.out_channels // conv.in_channels
        self.multiplier = r
        parts = []
        for j in range(r):
            part = make(
                conv.in_channels, conv.in_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, groups=conv.in_channels, bias=conv.bias is not None,
            ).to(conv.weight)  # fmt: skip
            with torch.no_grad():
                part.weight.copy_(conv.weight[j::r])
                if conv.bias is not None:
                    part.bias.copy_(conv.bias[j::r])
            parts.append(part)
        self.parts = nn.ModuleList(parts)

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (
            isinstance(conv, nn.modules.conv._ConvNd)
            and type(conv) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
            and conv.groups == conv.in_channels
            and conv.out_channels > conv.in_channels
            and conv.out_channels % conv.in_channels == 0
            and conv.padding_mode == "zeros"
        )

    def forward(self, x: Tensor) -> Tensor:
        return interleave_channels([conv(x) for conv in self.parts])


#: A sliced position-wise mixer evaluates at most this many query elements at once (16 MiB in
#: float32), so that even a 2x-expanded hidden tensor stays below glibc's largest mmap threshold
#: (32 MiB): its buffers are then reused from the heap instead of page-faulted in afresh every call.
SLICE_ELEMENTS = 1 << 22


class SlicedMetaMixer(MetaMixer):
    """A position-wise MetaMixer (key, act and value treat each position alone) that, without
    autograd, evaluates key, act and value on slices of the positions of a large query, bounding
    the working memory; results are identical.  Positions: axis 2 of channels-first tensors
    (``act_axis == 1``), axis -2 of channels-last ones."""

    def forward(self, x: Tensor) -> Tensor:
        q = self.query(x)
        axis = 2 if self.act_axis == 1 else -2
        if (
            self.training
            or torch.is_grad_enabled()
            or torch.onnx.is_in_onnx_export()
            or q.numel() <= SLICE_ELEMENTS
            or q.dim() < 3
        ):
            return self.value(self.act(self.key(q)))
        slices = -(-q.numel() // SLICE_ELEMENTS)
        length = -(-q.shape[axis] // slices)
        return torch.cat([self.value(self.act(self.key(p))) for p in q.split(length, axis)], axis)
