"""FFNet-seg: the paper's system-level semantic segmentation network, built from ``metamixer.core``.

Backbone: a four-conv stem (stride 4) → 4 stages of FFNet blocks; stages 2–4 start with a
patch-merging downsample (3×3 stride-2 conv+BN to 2·dim, GELU, 1×1 conv+BN).  Its token mixer is
FFNified attention whose depthwise key and value convs are trained with strip branches (k×k, an
optional small s×s, 1×k and k×1, each with BN, all folded into one k×k conv); its channel mixer is
a ConvNeXt-style block (depthwise conv+BN, then an FFN).  Stages 2–4 (strides 8/16/32) feed the head.

Head: the three levels are resized to stride 8 (bicubic) and concatenated → two 1×1 conv+BN
(with a GELU between) down to ``head_width`` → ``head_depth`` FFNet blocks whose residuals end in a
GELU (``GELU(x + mixer(x))``) and whose channel mixers also use strip-branch convs → 1×1 conv+BN
to ``head_out_ratio``·width + GELU → Dropout2d → 1×1 classifier → bilinear resize to the input.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import reduce
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metamixer.core import (
    ConvBN,
    DenseConvs,
    DenseOps,
    FusableConv,
    MetaBlock,
    MetaMixer,
    convnext_mixer,
    init_trunc_normal,
    register_architecture,
    stage_values,
)
from metamixer.core.reparam import fuse_conv_bn, pad_kernel
from metamixer.vision.models.classifier import check_images
from metamixer.vision.models.ffnet import ffnet_block

OPS = DenseOps(ndim=2)


class StripConvBN(FusableConv):
    """Depthwise ``BN(conv(x))`` with a 1×k (``horizontal``) or k×1 kernel.

    Its equivalent kernel is the k×k kernel that is zero outside the centre row (or column), so it
    folds into one k×k depthwise conv and adds to square branches of the same size.
    """

    def __init__(self, channels: int, kernel_size: int, *, horizontal: bool) -> None:
        super().__init__(channels, channels, kernel_size, convs=DenseConvs(2), groups=channels)
        half = kernel_size // 2
        shape, padding = (
            ((1, kernel_size), (0, half)) if horizontal else ((kernel_size, 1), (half, 0))
        )
        self.conv = nn.Conv2d(
            channels, channels, shape, padding=padding, groups=channels, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)

    def forward_branches(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        weight, bias = fuse_conv_bn(self.conv.weight, None, self.bn)
        pad_h = (self.kernel_size - weight.shape[-2]) // 2
        pad_w = (self.kernel_size - weight.shape[-1]) // 2
        return F.pad(weight, [pad_w, pad_w, pad_h, pad_h]), bias


class StripRepDWConv(FusableConv):
    """Depthwise k×k conv trained as parallel BN branches: k×k, an optional small s×s, 1×k and k×1.

    Input and output ``(B, channels, H, W)``; ``reparameterize()`` folds the branches into one k×k
    depthwise conv with bias.
    """

    def __init__(self, channels: int, kernel_size: int, small_kernel: int | None = None) -> None:
        super().__init__(channels, channels, kernel_size, convs=DenseConvs(2), groups=channels)
        if small_kernel is not None and not (small_kernel % 2 == 1 and small_kernel < kernel_size):
            raise ValueError(
                f"small_kernel must be odd and smaller than kernel_size ({kernel_size}), "
                f"got {small_kernel}"
            )
        self.large = ConvBN(channels, channels, kernel_size, groups=channels)
        self.small = (
            None
            if small_kernel is None
            else ConvBN(channels, channels, small_kernel, groups=channels)
        )
        self.row = StripConvBN(channels, kernel_size, horizontal=True)
        self.column = StripConvBN(channels, kernel_size, horizontal=False)

    def forward_branches(self, x: Tensor) -> Tensor:
        out = self.large(x) + self.row(x) + self.column(x)
        return out if self.small is None else out + self.small(x)

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        branches = [self.large, self.row, self.column] + (
            [] if self.small is None else [self.small]
        )
        pairs = [branch.kernel_bias() for branch in branches]
        weight = reduce(torch.add, [pad_kernel(w, self.kernel_size) for w, _ in pairs])
        return weight, reduce(torch.add, [b for _, b in pairs])


def strip_ffnified_attention(dim: int, kernel_size: int, small_kernel: int | None) -> MetaMixer:
    """FFNified attention with strip-branch depthwise key and value convs (FFNet-seg's token mixer):
    query 1×1 conv+BN, key and value ``StripRepDWConv``, GELU coefficients."""
    return MetaMixer(
        dim,
        query=OPS.query(dim, norm=True),
        key=StripRepDWConv(dim, kernel_size, small_kernel),
        act="gelu",
        value=StripRepDWConv(dim, kernel_size, small_kernel),
        act_axis=OPS.channel_axis,
    )


def strip_convnext_mixer(
    dim: int, kernel_size: int, small_kernel: int | None, mlp_ratio: float
) -> MetaMixer:
    """ConvNeXt-style channel mixer whose depthwise query conv has strip branches (the head's)."""
    hidden = int(dim * mlp_ratio)
    return MetaMixer(
        dim,
        query=StripRepDWConv(dim, kernel_size, small_kernel),
        key=OPS.pointwise(dim, hidden),
        act="gelu",
        value=OPS.project(hidden, dim),
        act_axis=OPS.channel_axis,
        mixes="channels",
    )


class PostActBlock(MetaBlock):
    """``act(x + drop_path(mixer(x)))``: a ``MetaBlock`` whose sum passes through an activation."""

    def __init__(self, dim: int, mixer: nn.Module, *, drop_path: float = 0.0) -> None:
        super().__init__(dim, mixer, drop_path=drop_path)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class FFNetSegHead(nn.Module):
    """FFNet-seg's decode head: features at strides 8/16/32 → logits at stride 8.

    Args:
        in_dims: channels of the input levels, finest first.
        num_classes: output classes.
        width: channels of the head blocks.
        depth: number of head blocks.
        kernel_size: depthwise kernel of the head's token and channel mixers.
        small_kernel: their parallel small kernel (``None`` = none).
        mlp_ratio: channel-mixer hidden width / width.
        out_ratio: the last 1×1 conv expands to ``out_ratio``·width (``None`` = no such layer).
        drop_path_rate: stochastic depth, increasing linearly over the blocks up to this value.
        dropout: channel dropout (``Dropout2d``) before the classifier.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        num_classes: int,
        *,
        width: int,
        depth: int,
        kernel_size: int,
        small_kernel: int | None,
        mlp_ratio: float,
        out_ratio: int | None,
        drop_path_rate: float,
        dropout: float,
    ) -> None:
        super().__init__()
        total = sum(in_dims)
        self.squeeze = nn.Sequential(ConvBN(total, total, 1), nn.GELU(), ConvBN(total, width, 1))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(
                        token=PostActBlock(
                            width, strip_ffnified_attention(width, kernel_size, small_kernel),
                            drop_path=rate,
                        ),
                        channel=PostActBlock(
                            width, strip_convnext_mixer(width, kernel_size, small_kernel, mlp_ratio),
                            drop_path=rate,
                        ),
                    )
                )
                for rate in rates
            )
        )  # fmt: skip
        out_dim = width if out_ratio is None else width * out_ratio
        self.expand = (
            nn.Identity()
            if out_ratio is None
            else nn.Sequential(ConvBN(width, out_dim, 1), nn.GELU())
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(out_dim, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        levels = [features[0]] + [
            F.interpolate(f, size=size, mode="bicubic", align_corners=False) for f in features[1:]
        ]
        x = self.expand(self.blocks(self.squeeze(torch.cat(levels, dim=1))))
        return self.classifier(self.dropout(x))


class FFNetSeg(nn.Module):
    """FFNet-seg semantic segmentation network: images ``(B, in_chans, H, W)`` → logits
    ``(B, num_classes, H, W)`` (H, W ≥ 32; multiples of 32 reproduce the authors' upsampling
    exactly, other sizes resize every level to the stride-8 grid).

    Args:
        depths: blocks per backbone stage.
        dims: channels per backbone stage.
        num_classes: segmentation classes.
        in_chans: input image channels.
        stem_dim: channels of the first two stem convs.
        token_kernels: token-mixer key/value depthwise kernel per stage.
        token_small_kernels: their parallel small kernel per stage (``None`` = none).
        channel_kernels: channel-mixer depthwise kernel (conv+BN) per stage.
        mlp_ratio: backbone channel-mixer hidden width / dim.
        layer_scale: initial layer-scale of the backbone blocks, ``None`` = none.
        drop_path_rate: backbone stochastic depth, increasing linearly over its blocks.
        head_width: channels of the head blocks.
        head_depth: number of head blocks.
        head_kernel: depthwise kernel of the head's token and channel mixers.
        head_small_kernel: their parallel small kernel (``None`` = none).
        head_mlp_ratio: head channel-mixer hidden width / head_width.
        head_out_ratio: the head's last 1×1 conv expands to this × head_width (``None`` = none).
        head_drop_path_rate: head stochastic depth, increasing linearly over its blocks.
        dropout: channel dropout before the classifier.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 18, 5),
        dims: Sequence[int] = (96, 192, 384, 768),
        *,
        num_classes: int = 150,
        in_chans: int = 3,
        stem_dim: int = 64,
        token_kernels: int | Sequence[int] = (3, 3, 9, 9),
        token_small_kernels: int | Sequence[int | None] | None = (None, None, 5, 5),
        channel_kernels: int | Sequence[int] = 3,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = 1e-5,
        drop_path_rate: float = 0.3,
        head_width: int = 256,
        head_depth: int = 3,
        head_kernel: int = 9,
        head_small_kernel: int | None = 5,
        head_mlp_ratio: float = 4.0,
        head_out_ratio: int | None = 4,
        head_drop_path_rate: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        n = len(depths)
        if len(dims) != n or n < 2:
            raise ValueError(
                f"depths ({len(depths)}) and dims ({len(dims)}) need equal lengths ≥ 2"
            )
        token_kernels = stage_values(token_kernels, n, "token_kernels")
        token_small = stage_values(token_small_kernels, n, "token_small_kernels")
        channel_kernels = stage_values(channel_kernels, n, "channel_kernels")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.feature_channels = list(dims[1:])

        self.stem = nn.Sequential(
            ConvBN(in_chans, stem_dim, 3, stride=2),
            nn.GELU(),
            ConvBN(stem_dim, stem_dim, 3),
            nn.GELU(),
            ConvBN(stem_dim, dims[0], 3),
            ConvBN(dims[0], dims[0], 3, stride=2),
        )
        rates = iter(torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist())
        self.stages = nn.ModuleList()
        for i in range(n):
            downsample: nn.Module = (
                nn.Identity()
                if i == 0
                else nn.Sequential(
                    ConvBN(dims[i - 1], 2 * dims[i], 3, stride=2),
                    nn.GELU(),
                    ConvBN(2 * dims[i], dims[i], 1),
                )
            )
            blocks = [
                ffnet_block(
                    strip_ffnified_attention(dims[i], token_kernels[i], token_small[i]),
                    convnext_mixer(
                        dims[i], ops=OPS, kernel_size=channel_kernels[i], conv_norm=True,
                        query_norm=None, expansion=mlp_ratio,
                    ),
                    dims[i],
                    next(rates),
                    layer_scale,
                )
                for _ in range(depths[i])
            ]  # fmt: skip
            self.stages.append(
                nn.Sequential(OrderedDict(downsample=downsample, blocks=nn.Sequential(*blocks)))
            )
        self.head = FFNetSegHead(
            dims[1:], num_classes, width=head_width, depth=head_depth, kernel_size=head_kernel,
            small_kernel=head_small_kernel, mlp_ratio=head_mlp_ratio, out_ratio=head_out_ratio,
            drop_path_rate=head_drop_path_rate, dropout=dropout,
        )  # fmt: skip
        self.apply(init_trunc_normal)

    @property
    def backbone(self) -> nn.Module:
        """The feature extractor (stem and stages, parameter names as in this network), e.g. for
        layer-wise learning rates; a view, not a submodule of its own."""
        return nn.Sequential(OrderedDict(stem=self.stem, stages=self.stages))

    def check_input(self, images: Tensor) -> None:
        check_images(images, self.in_chans, "FFNetSeg", min_size=32)

    def forward_features(self, images: Tensor) -> list[Tensor]:
        """Backbone outputs of stages 2…n (strides 8, 16, 32 for four stages)."""
        self.check_input(images)
        x = self.stem(images)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i > 0:
                features.append(x)
        return features

    def forward_with_features(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits at the input size, backbone features at strides 8/16/32)``."""
        features = self.forward_features(images)
        logits = self.head(features)
        size = images.shape[-2:]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False), features

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_features(images)[0]

    def load_backbone(self, path: str) -> None:
        """Initialise the backbone (stem and stages) from a local classification checkpoint: the
        authors' ``ffnet_seg.pth.tar`` (its classifier ``head1.*`` / ``head2.*`` is dropped) or a
        state dict in our layout.  A ValueError names missing and unexpected keys."""
        from metamixer.vision.segmentation.ffnet_seg_weights import load_ffnet_seg_backbone

        load_ffnet_seg_backbone(self, path)


# ------------------------------------------------------------------------------------------------
# Variants.  ``ffnet_seg`` is the authors' ADE20K configuration (ffnet_seg_512_ade_160k); their
# Cityscapes one (ffnet_seg_1024_city_160k) differs only in head_depth=5, head_mlp_ratio=1.0,
# head_drop_path_rate=0.0 and drop_path_rate=0.35 (that config names its backbone ``ffnet_seg_3``,
# which their backbone file does not define; the same backbone is assumed).

SEG_VARIANTS: dict[str, dict] = {
    "ffnet_seg": dict(
        depths=(3, 4, 18, 5), dims=(96, 192, 384, 768), stem_dim=64, token_kernels=(3, 3, 9, 9),
        token_small_kernels=(None, None, 5, 5), channel_kernels=3, mlp_ratio=4.0,
        layer_scale=1e-5, drop_path_rate=0.3, head_width=256, head_depth=3, head_kernel=9,
        head_small_kernel=5, head_mlp_ratio=4.0, head_out_ratio=4, head_drop_path_rate=0.1,
        dropout=0.1,
    ),
    # A tiny network with every module kind (strip convs with and without a small branch,
    # layer-scale, downsamples, head blocks), for CI and CPU smoke runs.
    "ffnet_seg_test": dict(
        depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), stem_dim=16, token_kernels=(3, 3, 7, 7),
        token_small_kernels=(None, None, 3, 3), channel_kernels=3, mlp_ratio=2.0,
        layer_scale=1e-5, drop_path_rate=0.0, head_width=32, head_depth=2, head_kernel=7,
        head_small_kernel=3, head_mlp_ratio=2.0, head_out_ratio=2, head_drop_path_rate=0.0,
        dropout=0.1,
    ),
}  # fmt: skip


def _example(network: nn.Module) -> tuple[Tensor]:
    in_chans = cast(FFNetSeg, network).in_chans  # registered for FFNetSeg only
    return (torch.randn(2, in_chans, 64, 64),)


for _variant, _args in SEG_VARIANTS.items():
    register_architecture(
        _variant, FFNetSeg, _args, task_args=("num_classes", "in_chans"), example=_example,
        test_task={"num_classes": 5, "in_chans": 3},
    )  # fmt: skip
