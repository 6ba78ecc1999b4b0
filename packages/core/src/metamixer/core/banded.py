"""A 1D depthwise conv that runs as a banded matrix product when the kernel spans the sequence.

Long-kernel forecasting mixers (kernel 51 on 48 patches) are slow through oneDNN's depthwise
``conv1d`` on CPU: 2.5× slower forward+backward than multiplying by the equivalent banded
(Toeplitz) matrix.  ``benchmarks/timeseries.py`` shows the effect on training time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class DepthwiseConv1d(nn.Conv1d):
    """``nn.Conv1d(C, C, k, padding=k // 2, groups=C)`` (stride 1, odd k), same parameters.

    On CPU, when the sequence is at most twice the kernel (where the band beats oneDNN, measured
    for k = 13…51), the forward is ``x @ banded_matrix``; otherwise, on GPU and while tracing or
    exporting, it is the ordinary conv.  Results agree to float rounding.
    """

    def __init__(self, channels: int, kernel_size: int, *, bias: bool = True) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias
        )

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        if length > 2 * self.kernel_size[0] or not eager_on_cpu(x):
            return super().forward(x)
        out = torch.matmul(x.transpose(0, 1), banded_matrix(self.weight, length)).transpose(0, 1)
        return out if self.bias is None else out + self.bias[:, None]
