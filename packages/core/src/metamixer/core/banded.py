"""A 1D depthwise conv that runs as a banded matrix product when the kernel spans the sequence.

Long-kernel forecasting mixers (kernel 51 on 48 patches) are slow through oneDNN's depthwise
``conv1d`` on CPU: 2.5× slower forward+backward than multiplying by the equivalent banded
(Toeplitz) matrix.  ``benchmarks/timeseries.py`` shows the effect on training time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def banded_matrix(weight: Tensor, length: int) -> Tensor:
    """``(C, 1, k)`` depthwise kernel -> ``(C, L, L)`` matrix ``M`` with ``conv1d(x) == x @ M``.

    Row ``j`` (input position) column ``i`` (output position) holds ``weight[c, 0, j - i + k // 2]``
    inside the band, zero outside (the conv's zero padding).
    """
    kernel = weight.shape[-1]
    positions = torch.arange(length, device=weight.device)
    tap = positions[:, None] - positions[None, :] + kernel // 2
    inside = (tap >= 0) & (tap < kernel)
    return weight[:, 0, tap.clamp(0, kernel - 1)] * inside


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
        if (
            x.device.type != "cpu"
            or length > 2 * self.kernel_size[0]
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
            or torch.compiler.is_compiling()
        ):
            return super().forward(x)
        out = torch.matmul(x.transpose(0, 1), banded_matrix(self.weight, length)).transpose(0, 1)
        return out if self.bias is None else out + self.bias[:, None]
