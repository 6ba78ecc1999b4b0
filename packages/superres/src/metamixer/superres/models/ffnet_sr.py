"""FFNet-SR: FFNet blocks without downsampling for image super-resolution.

3×3 conv (3 → dim) → ``depth`` blocks [FFNified attention: 1×1 conv → 3×3 depthwise → GELU →
3×3 depthwise] + [channel mixer: 3×3 depthwise → 1×1 expand → GELU → 1×1], each residual →
3×3 conv to ``3·scale²`` channels + the input repeated ``scale²`` times (long skip) → pixel shuffle.
``norm``: None (the released models), "LN" (pre-norm of each mixer) or "BN" (after the first conv).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from metamixer.core import DenseOps, MetaBlock, build_token_mixer, convnext_mixer

OPS = DenseOps(ndim=2)
NORMS = (None, "LN", "BN")


def ffnet_sr_block(
    dim: int,
    expansion_ratio: float,
    norm: str | None,
    *,
    kernel_size: int = 3,
    act: str = "gelu",
    token_mixer_kind: str = "ffnified",
) -> nn.Sequential:
    """One FFNet-SR block (token mixer then channel mixer)."""
    pre_norm = (lambda: OPS.norm(dim, "layer")) if norm == "LN" else (lambda: None)
    query = OPS.pointwise(dim, dim)
    if norm == "BN":
        query = nn.Sequential(query, OPS.norm(dim, "batch"))
    token = build_token_mixer(
        token_mixer_kind, dim, ops=OPS, kernel_size=kernel_size, act=act,
        ffnified={"query": query},
    )  # fmt: skip
    channel = convnext_mixer(
        dim, ops=OPS, kernel_size=kernel_size, expansion=expansion_ratio, act=act,
        query_norm="batch" if norm == "BN" else None,
    )  # fmt: skip
    return nn.Sequential(
        OrderedDict(
            token=MetaBlock(dim, token, norm=pre_norm()),
            channel=MetaBlock(dim, channel, norm=pre_norm()),
        )
    )


class FFNetSR(nn.Module):
    """Super-resolve ``(B, 3, H, W)`` RGB in [0, 1] to ``(B, 3, scale·H, scale·W)``.

    Args (the authors' basicsr option keys):
        scale: upscaling factor (2, 3, 4).
        dim: feature channels.
        depth: number of blocks (48 for FFNet_sr, 36 for FFNet_sr-light).
        expansion_ratio: channel-mixer expansion.
        norm: None, "LN" or "BN".
        kernel_size: depthwise kernel of both mixers (3 in the paper; for ablations).
        act: coefficient activation (for ablations).
        token_mixer: "ffnified", or for ablations "attention", "pooling", "identity".
    """

    def __init__(
        self,
        scale: int = 2,
        dim: int = 96,
        depth: int = 36,
        expansion_ratio: float = 2.0,
        norm: str | None = None,
        kernel_size: int = 3,
        act: str = "gelu",
        token_mixer: str = "ffnified",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale, self.norm = scale, norm
        self.proj = nn.Conv2d(3, dim, 3, 1, 1)
        block = dict(kernel_size=kernel_size, act=act, token_mixer_kind=token_mixer)
        self.body = nn.Sequential(
            *(ffnet_sr_block(dim, expansion_ratio, norm, **block) for _ in range(depth))
        )
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


VARIANTS = {
    "ffnet_sr": dict(dim=96, depth=48, expansion_ratio=2.0),
    "ffnet_sr_light": dict(dim=96, depth=36, expansion_ratio=2.0),
}
