"""FFNet-SR: FFNet blocks without downsampling for image super-resolution.

3×3 conv (3 → dim) → ``depth`` blocks [FFNified attention: 1×1 conv → 3×3 depthwise → GELU →
3×3 depthwise] + [channel mixer: 3×3 depthwise → 1×1 expand → GELU → 1×1], each residual →
3×3 conv to ``3·scale²`` channels + the input repeated ``scale²`` times (long skip) → pixel shuffle.
``norm``: None (the released models), "LN" (pre-norm of each mixer) or "BN" (after the first conv).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

import torch
from torch import Tensor, nn

from metamixer.core import (
    DenseOps,
    MetaBlock,
    MixerSettings,
    build_network,
    register_architecture,
)

OPS = DenseOps(ndim=2)
NORMS = (None, "LN", "BN")


class FFNetSR(nn.Module):
    """Super-resolve ``(B, 3, H, W)`` RGB in [0, 1] to ``(B, 3, scale·H, scale·W)``.

    Per-group settings (``token_mixers``, ``token_acts``, ``channel_mixers``, ``channel_acts``,
    ``token_kernels``, ``channel_kernels``) take one value for every block, or a list whose
    length divides ``depth``: the blocks are split into that many equal consecutive groups.

    Args:
        scale: upscaling factor (2, 3, 4).
        dim: feature channels.
        depth: number of blocks (48 for FFNet_sr, 36 for FFNet_sr-light).
        norm: None (the released models), "LN" (pre-norm of each mixer) or "BN" (after the
            first conv of each mixer).
        mixers: the mixers of each block (or group of blocks) (``metamixer.core.MixerSettings``: token / channel mixer,
            activations, kernels, ``mlp_ratio``), given as flat ``arch_args`` keys.
            (3×3 kernels in the paper).
    """

    def __init__(
        self,
        scale: int = 2,
        dim: int = 96,
        depth: int = 36,
        norm: str | None = None,
        mixers: MixerSettings | None = None,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale, self.norm = scale, norm
        mixers = mixers or MixerSettings(token_kernels=3, mlp_ratio=2.0)  # the paper's
        stages = mixers.stages(depth, groups=True, stage_name="block")
        batch_norm = "batch" if norm == "BN" else None
        self.proj = nn.Conv2d(3, dim, 3, 1, 1)
        blocks = []
        for i in range(depth):
            pre_norm = (lambda: OPS.norm(dim, "layer")) if norm == "LN" else (lambda: None)
            blocks.append(
                nn.Sequential(
                    OrderedDict(
                        token=MetaBlock(
                            dim, stages[i].token(dim, OPS, query_norm=batch_norm), norm=pre_norm()
                        ),
                        channel=MetaBlock(
                            dim, stages[i].channel(dim, OPS, query_norm=batch_norm), norm=pre_norm()
                        ),
                    )
                )
            )
        self.body = nn.Sequential(*blocks)
        self.conv_bef_up = nn.Conv2d(dim, 3 * scale**2, 3, 1, 1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"FFNetSR expects RGB batches (B, 3, H, W), got {tuple(x.shape)}; convert grey "
                "or RGBA images to RGB first"
            )
        skip = x.repeat_interleave(self.scale**2, dim=1)
        return self.up(self.conv_bef_up(self.body(self.proj(x))) + skip)


#: Every architectural argument of each variant, spelled out once.
FFNET_SR = dict(
    dim=96, mlp_ratio=2.0, norm=None, token_mixers="ffnified", token_acts=None,
    channel_mixers="convnext", channel_acts=None, token_kernels=3, token_value_kernels=None,
    channel_kernels=3,
)  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    "ffnet_sr": dict(FFNET_SR, depth=48),
    "ffnet_sr_light": dict(FFNET_SR, depth=36),
    # a hybrid: FFNified attention in the first half of the blocks, self-attention in the second
    "ffnet_sr_light_hybrid": dict(
        FFNET_SR, depth=36, token_mixers=("ffnified", "attention"), token_acts=("gelu", "softmax")
    ),
    "ffnet_sr_test": dict(FFNET_SR, dim=8, depth=2),
}


def _example(network: nn.Module) -> tuple[Tensor]:
    return (torch.rand(1, 3, 12, 12),)


for _name, _args in VARIANTS.items():
    register_architecture(
        _name, FFNetSR, _args, task_args=("scale",), example=_example, test_task={"scale": 2}
    )


def basicsr_ffnet_sr(
    scale: int = 2,
    dim: int = 96,
    depth: int = 36,
    expansion_ratio: float = 2.0,
    norm: str | None = None,
) -> FFNetSR:
    """``FFNetSR`` with the authors' basicsr option keys (``expansion_ratio`` = ``mlp_ratio``)."""
    overrides = {"dim": dim, "depth": depth, "mlp_ratio": expansion_ratio, "norm": norm}
    return cast(FFNetSR, build_network("ffnet_sr_light", {"scale": scale}, overrides))


basicsr_ffnet_sr.__name__ = "FFNetSR"  # the ``type`` of the authors' option files
