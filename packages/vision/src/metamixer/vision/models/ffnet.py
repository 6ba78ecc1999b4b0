"""FFNet-1…4 for image classification, built from ``metamixer.core`` and registered with timm.

Stem (two stride-2 3×3 conv+BN) → 4 stages → BatchNorm → global average pool → linear head.
Stages 2–4 start with a downsample: a 7×7 stride-2 depthwise-style conv (trained with a parallel 3×3
branch) then BN → 1×1 conv with an identity shortcut.  A block is an FFNified-attention token mixer
followed by a ConvNeXt-style channel mixer, each a residual ``MetaBlock``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from metamixer.core import (
    ConvBN,
    DenseOps,
    MetaBlock,
    MixerSettings,
    PointwiseShortcut,
    init_trunc_normal,
    network_args,
    register_architecture,
)
from metamixer.vision.models.classifier import TimmClassifier, check_images, stage_count

OPS = DenseOps(ndim=2)


def ffnet_block(
    token: nn.Module, channel: nn.Module, dim: int, drop_path: float, layer_scale: float | None
) -> nn.Sequential:
    """One FFNet block: a token mixer then a channel mixer, each a residual ``MetaBlock``."""
    return nn.Sequential(
        OrderedDict(
            token=MetaBlock(dim, token, drop_path=drop_path, layer_scale=layer_scale),
            channel=MetaBlock(dim, channel, drop_path=drop_path, layer_scale=layer_scale),
        )
    )


class FFNet(TimmClassifier, nn.Module):
    """FFNet image classifier (timm interface: ``forward_features`` / ``forward_head`` /
    ``forward_intermediates``; input ``(B, in_chans, H, W)`` with H, W multiples of 32 recommended).

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        in_chans: input image channels.
        num_classes: classifier outputs (0 = no head, features only).
        stem_dim: channels after the first stem conv.
        mixers: the mixers of each stage (``metamixer.core.MixerSettings``: token / channel mixer,
            activations, kernels, ``mlp_ratio``; e.g. ``token_mixers=[ffnified, ffnified,
            attention, attention]`` for a hybrid); given as flat ``arch_args`` keys.
        down_kernel: downsample depthwise kernel; ``down_small_kernel`` its parallel branch.
        layer_scale: initial layer-scale, ``None`` = none.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, increasing linearly to this value over the blocks.
        global_pool: timm pool type of the head ("avg", "max", …, "" = none).
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 8, 2),
        dims: Sequence[int] = (80, 160, 320, 640),
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        stem_dim: int = 64,
        mixers: MixerSettings | None = None,
        down_kernel: int = 7,
        down_small_kernel: int = 3,
        layer_scale: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        n = stage_count(depths, dims)
        mixers = mixers or MixerSettings(  # FFNet-1's
            token_kernels=(3, 3, 7, 7), token_small_kernels=(None, None, 3, 3), mlp_ratio=3.0
        )
        stages = mixers.stages(n)
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        self.stem = nn.Sequential(
            ConvBN(in_chans, stem_dim, 3, stride=2),
            nn.GELU(),
            ConvBN(stem_dim, dims[0], 3, stride=2),
        )
        rates = iter(torch.linspace(0, drop_path_rate, sum(depths)).tolist())
        self.stages = nn.ModuleList()
        self.feature_info = []
        for i in range(n):
            if i == 0:
                downsample: nn.Module = nn.Identity()
            else:
                downsample = nn.Sequential(
                    OPS.depthwise(
                        dims[i - 1],
                        down_kernel,
                        out_dim=dims[i],
                        stride=2,
                        small_kernel=down_small_kernel,
                    ),
                    PointwiseShortcut(dims[i]),
                )
            blocks = [
                ffnet_block(
                    stages[i].token(dims[i], OPS, query_norm="batch"),
                    stages[i].channel(dims[i], OPS, conv_norm=True),
                    dims[i],
                    next(rates),
                    layer_scale,
                )
                for _ in range(depths[i])
            ]
            self.stages.append(
                nn.Sequential(OrderedDict(downsample=downsample, blocks=nn.Sequential(*blocks)))
            )
            self.feature_info.append(
                dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}")
            )
        self.norm: nn.Module = nn.BatchNorm2d(dims[-1])
        self.init_head(dims[-1], num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.apply(init_trunc_normal)

    # --- timm interface -------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        check_images(x, self.in_chans, "FFNet", min_size=32)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs at strides 4/8/16/32 (``indices`` as in timm: last n if int, None = all)."""
        if output_fmt != "NCHW":
            raise ValueError(f"FFNet intermediates are NCHW only, got output_fmt={output_fmt!r}")
        self.check_input(x)
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self.norm(x) if i == last else x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


# ------------------------------------------------------------------------------------------------
# Variants (paper Table: FFNet-1…4) and timm registration.

#: Every architectural argument of each variant (paper table: FFNet-1…4), spelled out once.
FFNET = dict(
    stem_dim=64, token_mixers="ffnified", token_acts=None, channel_mixers="convnext",
    channel_acts=None, token_kernels=(3, 3, 7, 7), token_value_kernels=None,
    token_small_kernels=(None, None, 3, 3),
    mlp_ratio=3.0, down_kernel=7, down_small_kernel=3, drop_rate=0.0, global_pool="avg",
)  # fmt: skip
VARIANTS: dict[str, dict] = {
    "ffnet_1": dict(
        FFNET, depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), channel_kernels=3,
        channel_small_kernels=None, layer_scale=None, drop_path_rate=0.1,
    ),
    "ffnet_2": dict(
        FFNET, depths=(3, 3, 15, 3), dims=(88, 176, 352, 704), channel_kernels=7,
        channel_small_kernels=3, layer_scale=None, drop_path_rate=0.15,
    ),
    "ffnet_3": dict(
        FFNET, depths=(4, 4, 22, 5), dims=(96, 192, 384, 768), channel_kernels=7,
        channel_small_kernels=3, layer_scale=1e-6, drop_path_rate=0.35,
    ),
    "ffnet_4": dict(
        FFNET, depths=(4, 4, 27, 3), dims=(128, 256, 512, 1024), channel_kernels=7,
        channel_small_kernels=3, layer_scale=1e-6, drop_path_rate=0.4,
    ),
    # A hybrid in CAFormer's manner: FFNified attention in stages 1–2, self-attention in 3–4.
    "ffnet_1_hybrid": dict(
        FFNET, depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), channel_kernels=3,
        channel_small_kernels=None, layer_scale=None, drop_path_rate=0.1,
        token_mixers=("ffnified", "ffnified", "attention", "attention"),
        token_acts=("gelu", "gelu", "softmax", "softmax"),
    ),
    # A tiny model with every module kind, for CI and CPU smoke runs.
    "ffnet_test": dict(
        FFNET, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), stem_dim=16, channel_kernels=7,
        channel_small_kernels=3, layer_scale=1e-6, drop_path_rate=0.0,
    ),
}  # fmt: skip


def _cfg(**kwargs: object) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 256, 256),
        "pool_size": (8, 8),
        "crop_pct": 0.9,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.0.conv",
        "classifier": "head",
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "ffnet_1.in1k": _cfg(),
        "ffnet_2.in1k": _cfg(),
        "ffnet_3.in1k": _cfg(crop_pct=0.95),
        "ffnet_4.in1k": _cfg(crop_pct=0.95, input_size=(3, 384, 384), pool_size=(12, 12)),
        "ffnet_1_hybrid.untrained": _cfg(),
        "ffnet_test.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    }
)


def _build(variant: str, pretrained: bool = False, **args: Any) -> FFNet:
    """``variant`` with its full argument set (merged once, by ``network_args``), through timm's
    builder so that its pretrained configs apply."""
    from metamixer.vision.models.ffnet_weights import convert_official_state_dict

    return build_model_with_cfg(
        FFNet,
        variant,
        pretrained,
        pretrained_filter_fn=convert_official_state_dict,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **args,
    )


def _example(network: nn.Module) -> tuple[Tensor]:
    in_chans = cast(FFNet, network).in_chans  # registered for FFNet only
    return (torch.randn(2, in_chans, 64, 64),)


def _register(variant: str) -> None:
    """Register ``variant`` with ``metamixer.core.ARCHITECTURES`` (its one spec) and with timm
    (keyed by the entry point's name), whose entry point builds it through the same spec."""
    entry = register_architecture(
        variant, FFNet, VARIANTS[variant], task_args=TASK_ARGS, build=partial(_build, variant),
        example=_example, test_task={"num_classes": 3, "in_chans": 3},
    )  # fmt: skip

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> FFNet:
        task = {k: kwargs.pop(k) for k in TASK_ARGS if k in kwargs}
        arch = {k: kwargs.pop(k) for k in entry.parameters() if k in kwargs}
        # what is left is timm's (pretrained_cfg, features_only, …) and goes to its builder
        network = entry.construct(
            network_args(variant, task, arch), pretrained=pretrained, **kwargs
        )
        return cast(FFNet, network)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__doc__ = f"timm entry point of ``{variant}`` (keyword arguments: its arch_args)."
    register_model(entrypoint)


TASK_ARGS = ("num_classes", "in_chans")
for _variant in VARIANTS:
    _register(_variant)
