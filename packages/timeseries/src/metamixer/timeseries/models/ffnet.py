"""1D FFNet for long-term forecasting (the authors' ModernTCN-style design), built from core mixers.

``(B, L, M)`` history → RevIN → per-variable patch stem → blocks on ``(B, M·D, N)`` → flatten head →
RevIN⁻¹ → ``(B, H, M)`` forecast.  A block is

* token mixer = FFNified attention: query = FFN across variables (expansion 2) + shared BN,
  key / value = large-kernel depthwise convs along the patches, GELU in between;
* channel mixer = ConvNeXt-style: query = depthwise conv (large + small kernel, re-parameterizable)
  + shared BN, key = per-variable expansion (``ffn_ratio``), GELU, value = the authors' projection
  back, which mixes each output feature across variables.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metamixer.core import MetaBlock, build_token_mixer, convnext_mixer

from ..ops import Dropout, PointwiseConv1d, RevIN, SharedBatchNorm, SwapAxes, VariableOps


def cross_variable_ffn(
    num_vars: int, dim: int, expansion: int, drop_hidden: float, drop_out: float
) -> nn.Sequential:
    """The token mixer's query: for every feature, an FFN over the M variables (M → e·M), then
    a grouped projection back to D features per variable; dropout inside, shared BN after."""
    m, hidden = num_vars, expansion * num_vars
    return nn.Sequential(
        SwapAxes(m, dim),  # (M, D) -> (D, M): group by feature
        PointwiseConv1d(dim * m, dim * hidden, groups=dim),
        Dropout(drop_hidden),
        nn.GELU(),
        SwapAxes(dim, hidden),  # (D, e·M) -> (e·M, D)
        PointwiseConv1d(hidden * dim, m * dim, groups=m),
        Dropout(drop_out),
        SharedBatchNorm(dim, m),
    )


def mixing_projection(num_vars: int, hidden: int, dim: int, drop: float) -> nn.Sequential:
    """The channel mixer's value: per-variable hidden ``(M, F)`` → ``(M, D)``, each output feature
    d reading hidden units [d·F/D, (d+1)·F/D) of all M variables (the authors' grouping)."""
    m = num_vars
    return nn.Sequential(
        SwapAxes(m, hidden),
        PointwiseConv1d(hidden * m, dim * m, groups=dim),
        SwapAxes(dim, m),
        Dropout(drop),
    )


class FFNetForecaster(nn.Module):
    """Forecast ``(B, horizon, M)`` from a ``(B, seq_len, M)`` history.

    Args:
        num_vars: number of variables M (``enc_in`` in TSLib).
        seq_len: look-back window L.
        horizon: forecast length H (``pred_len``).
        dim: features per variable D.
        depth: number of blocks.
        ffn_ratio: channel-mixer expansion.
        large_kernel: depthwise kernel of both mixers (along patches).
        small_kernel: parallel small kernel of the channel mixer's conv (``None`` = none).
        patch_size: stem patch length.
        patch_stride: stem stride (the series is padded by repeating its last value).
        dropout: backbone dropout (channel-mixer hidden units).
        head_dropout: dropout after the flatten head.
        token_expansion: the token mixer's cross-variable FFN expansion.
        revin: reversible instance normalisation.
        revin_affine: learnable RevIN scale and shift.
        act: coefficient activation of both mixers.
        token_mixer: "ffnified" (FFNet), or for ablations "attention" (over patches, all
            variables' features per token), "pooling", "identity".
    """

    def __init__(
        self,
        num_vars: int,
        seq_len: int = 96,
        horizon: int = 96,
        *,
        dim: int = 64,
        depth: int = 1,
        ffn_ratio: int = 2,
        large_kernel: int = 51,
        small_kernel: int | None = 5,
        patch_size: int = 4,
        patch_stride: int = 2,
        dropout: float = 0.1,
        head_dropout: float = 0.0,
        token_expansion: int = 2,
        revin: bool = True,
        revin_affine: bool = False,
        act: str = "gelu",
        token_mixer: str = "ffnified",
    ) -> None:
        super().__init__()
        if patch_size < patch_stride:
            raise ValueError(f"patch_size ({patch_size}) must be >= patch_stride ({patch_stride})")
        if seq_len < patch_size:
            raise ValueError(f"seq_len ({seq_len}) must be at least patch_size ({patch_size})")
        self.num_vars, self.seq_len, self.horizon, self.dim = num_vars, seq_len, horizon, dim
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.num_patches = (seq_len + patch_size - patch_stride - patch_size) // patch_stride + 1
        ops = VariableOps(num_vars)
        token_mixer_kind = token_mixer
        self.revin = RevIN(num_vars, affine=revin_affine) if revin else None
        self.stem = nn.Sequential(nn.Conv1d(1, dim, patch_size, patch_stride), nn.BatchNorm1d(dim))
        blocks = []
        for _ in range(depth):
            token = build_token_mixer(
                token_mixer_kind,
                num_vars * dim if token_mixer_kind == "attention" else dim,
                ops=ops,
                kernel_size=large_kernel,
                act=act,
                num_heads=num_vars,
                ffnified={"query": cross_variable_ffn(num_vars, dim, token_expansion, 0.3, 0.15)},
            )
            hidden = dim * ffn_ratio
            channel = convnext_mixer(
                dim,
                ops=ops,
                kernel_size=large_kernel,
                small_kernel=small_kernel,
                conv_norm=True,
                query_norm="batch",
                expansion=ffn_ratio,
                act=act,
                key=nn.Sequential(ops.pointwise(dim, hidden), Dropout(dropout)),
                value=mixing_projection(num_vars, hidden, dim, 0.15),
            )
            blocks.append(nn.Sequential(MetaBlock(dim, token), MetaBlock(dim, channel)))
        self.blocks = nn.Sequential(*blocks)
        self.head_dropout = Dropout(head_dropout)
        self.head = nn.Linear(dim * self.num_patches, horizon)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.seq_len, self.num_vars):
            raise ValueError(
                f"expected a history of shape (batch, seq_len={self.seq_len}, "
                f"variables={self.num_vars}), got {tuple(x.shape)}"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, L, M)`` normalised history -> ``(B, M·D, N)`` features."""
        b = x.shape[0]
        series = x.transpose(1, 2).reshape(b * self.num_vars, 1, self.seq_len)
        pad = self.patch_size - self.patch_stride
        if pad:
            series = torch.cat([series, series[..., -1:].expand(-1, -1, pad)], dim=-1)
        patches = self.stem(series)  # (B·M, D, N)
        return self.blocks(patches.reshape(b, self.num_vars * self.dim, -1))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        features = self.forward_features(x)
        b = x.shape[0]
        flat = features.reshape(b, self.num_vars, self.dim * self.num_patches)
        y = self.head_dropout(self.head(flat)).transpose(1, 2)  # (B, H, M)
        if stats is not None:
            y = self.revin.denormalize(y, stats)
        return y
