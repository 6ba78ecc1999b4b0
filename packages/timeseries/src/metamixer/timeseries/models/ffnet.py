"""1D FFNet for long-term forecasting (the authors' ModernTCN-style design), built from core mixers.

``(B, L, M)`` history → RevIN → per-variable patch stem → blocks on ``(B, M·D, N)`` → flatten head →
RevIN⁻¹ → ``(B, H, M)`` forecast.  A block is

* token mixer = FFNified attention: query = FFN across variables (expansion 2) + shared BN,
  key / value = large-kernel depthwise convs along the patches, GELU in between;
* channel mixer = ConvNeXt-style: query = depthwise conv (large + small kernel, re-parameterizable)
  + shared BN, key = per-variable expansion (``mlp_ratio``), GELU, value = the authors' projection
  back, which mixes each output feature across variables.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from metamixer.core import (
    MetaBlock,
    MixerSettings,
    register_architecture,
)

from ..ops import RevIN, VariableOps


class FFNetForecaster(nn.Module):
    """Forecast ``(B, horizon, M)`` from a ``(B, seq_len, M)`` history.

    Per-block settings (mixers, activations, kernels) take one value for every block or a list
    whose length divides ``depth`` (equal consecutive groups of blocks).

    Args:
        num_vars: number of variables M (``enc_in`` in TSLib).
        seq_len: look-back window L.
        horizon: forecast length H (``pred_len``).
        dim: features per variable D.
        depth: number of blocks.
        mixers: the mixers of each block (``metamixer.core.MixerSettings``, given as flat
            ``arch_args`` keys); kernels run along the patches; ``mlp_ratio`` is the authors'
            ``ffn_ratio``; "attention" runs over patches with all variables' features per token
            (one head per variable).
        patch_size: stem patch length.
        patch_stride: stem stride (the series is padded by repeating its last value).
        query_mlp_ratio: expansion of the token mixer's cross-variable query FFN.
        query_drop, query_proj_drop: its hidden and output dropout.
        mlp_drop: dropout on the channel mixer's hidden units.
        proj_drop: dropout on the channel mixer's output.
        drop_rate: dropout after the flatten head.
        revin: reversible instance normalisation.
        revin_affine: learnable RevIN scale and shift.
    """

    def __init__(
        self,
        num_vars: int,
        seq_len: int = 96,
        horizon: int = 96,
        *,
        dim: int = 64,
        depth: int = 1,
        mixers: MixerSettings | None = None,
        patch_size: int = 4,
        patch_stride: int = 2,
        query_mlp_ratio: int = 2,
        query_drop: float = 0.3,
        query_proj_drop: float = 0.15,
        mlp_drop: float = 0.1,
        proj_drop: float = 0.15,
        drop_rate: float = 0.0,
        revin: bool = True,
        revin_affine: bool = False,
    ) -> None:
        super().__init__()
        if patch_size < patch_stride:
            raise ValueError(f"patch_size ({patch_size}) must be >= patch_stride ({patch_stride})")
        if seq_len < patch_size:
            raise ValueError(f"seq_len ({seq_len}) must be at least patch_size ({patch_size})")
        self.num_vars, self.seq_len, self.horizon, self.dim = num_vars, seq_len, horizon, dim
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.num_patches = (seq_len + patch_size - patch_stride - patch_size) // patch_stride + 1
        mixers = mixers or MixerSettings(  # the authors' forecaster
            token_kernels=51, channel_kernels=51, channel_small_kernels=5, mlp_ratio=2
        )
        stages = mixers.stages(depth, groups=True, stage_name="block")
        ops = VariableOps(num_vars, query_mlp_ratio, query_drop, query_proj_drop)
        self.revin = RevIN(num_vars, affine=revin_affine) if revin else None
        self.stem = nn.Sequential(nn.Conv1d(1, dim, patch_size, patch_stride), nn.BatchNorm1d(dim))
        blocks = []
        for i in range(depth):
            token = stages[i].token(dim, ops, query_norm="batch", num_heads=num_vars)
            channel = stages[i].channel(
                dim, ops, conv_norm=True, query_norm="batch", drop=mlp_drop, proj_drop=proj_drop
            )
            blocks.append(nn.Sequential(MetaBlock(dim, token), MetaBlock(dim, channel)))
        self.blocks = nn.Sequential(*blocks)
        self.head_dropout = nn.Dropout(drop_rate)
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
        if self.revin is not None and stats is not None:
            y = self.revin.denormalize(y, stats)
        return y


#: Every architectural argument of each variant, spelled out once.  ``ffnet_ts`` is the authors'
#: forecaster (their ETT/Weather/ECL/Traffic scripts vary ``mlp_ratio``, ``dim`` and the dropouts).
FFNET_TS = dict(
    dim=64, depth=1, mlp_ratio=2, token_mixers="ffnified", token_acts=None,
    channel_mixers="convnext", channel_acts=None, token_kernels=51, token_value_kernels=None,
    channel_kernels=51,
    channel_small_kernels=5, patch_size=4, patch_stride=2, query_mlp_ratio=2, query_drop=0.3,
    query_proj_drop=0.15, mlp_drop=0.1, proj_drop=0.15, drop_rate=0.0, revin=True,
    revin_affine=False,
)  # fmt: skip
VARIANTS = {
    "ffnet_ts": FFNET_TS,
    # a hybrid: two blocks, FFNified attention then self-attention over the patches
    "ffnet_ts_hybrid": dict(
        FFNET_TS, depth=2, token_mixers=("ffnified", "attention"), token_acts=("gelu", "softmax")
    ),
    "ffnet_ts_test": dict(
        FFNET_TS, dim=8, token_kernels=5, channel_kernels=5, channel_small_kernels=3
    ),
}


def _example(network: nn.Module) -> tuple[Tensor]:
    forecaster = cast(FFNetForecaster, network)  # registered for FFNetForecaster only
    return (torch.randn(4, forecaster.seq_len, forecaster.num_vars),)


for _name, _args in VARIANTS.items():
    register_architecture(
        _name, FFNetForecaster, _args, task_args=("num_vars", "seq_len", "horizon"),
        example=_example, test_task={"num_vars": 3, "seq_len": 32, "horizon": 8},
    )  # fmt: skip
