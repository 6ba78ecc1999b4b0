"""PoolFormer (MetaFormer with pooling token mixers) built from ``metamixer.core``'s mixers.

Stem (7×7 stride-4 conv) → stages (a 3×3 stride-2 conv between them) → global average pool →
LayerNorm → linear head.  A block is a token ``MetaBlock`` (GroupNorm with one group, the registered
"pooling" mixer ``avgpool(x) - x``, layer-scale) then a channel ``MetaBlock`` (GroupNorm, the
registered "ffn" mixer: 1×1 conv, GELU, 1×1 conv, layer-scale).  ``poolformer_s12`` has timm's
``poolformer_s12`` shapes and computes the same function once timm's weights are converted
(``metamixer.vision.models.ffnet_weights.convert_timm_poolformer_state_dict``), so a local timm PoolFormer
weight file can be analysed through the MetaMixer hooks (the FFN coefficients after GELU).

The variants are registered in ``metamixer.core.ARCHITECTURES`` only (not with timm, whose own
``poolformer_s12`` keeps its name there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metamixer.core import (
    DenseOps,
    MetaBlock,
    MixerSettings,
    init_trunc_normal,
    register_architecture,
)
from metamixer.vision.models.classifier import TimmClassifier, check_images, stage_count
from metamixer.vision.models.ffnet import _example

OPS = DenseOps(ndim=2)


class PoolFormer(TimmClassifier, nn.Module):
    """PoolFormer image classifier (``forward_features`` / ``forward_head`` as in timm).

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        in_chans: input image channels.
        num_classes: classifier outputs (0 = no head, features only).
        mixers: the mixers of each stage (``metamixer.core.MixerSettings``: token / channel mixer,
            activations, kernels, ``mlp_ratio``), given as flat ``arch_args`` keys.
            PoolFormer: "pooling" token mixers (``token_kernels``: the pool size), "ffn" channel
            mixers.
        layer_scale: initial layer-scale of every residual branch, ``None`` = none.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, increasing linearly to this value over the blocks.
        global_pool: timm pool type of the head ("avg", "max", …).
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        mixers: MixerSettings | None = None,
        layer_scale: float | None = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        n = stage_count(depths, dims)
        stages = (mixers or MixerSettings(token_mixers="pooling", channel_mixers="ffn")).stages(n)
        self.in_chans = in_chans
        self.stem = nn.Conv2d(in_chans, dims[0], 7, stride=4, padding=2)
        rates = iter(torch.linspace(0, drop_path_rate, sum(depths)).tolist())
        self.stages = nn.ModuleList()
        for i in range(n):
            downsample = (
                nn.Identity() if i == 0 else nn.Conv2d(dims[i - 1], dims[i], 3, stride=2, padding=1)
            )
            blocks = []
            for _ in range(depths[i]):
                residual = dict(drop_path=next(rates), layer_scale=layer_scale)
                blocks.append(
                    nn.Sequential(
                        OrderedDict(
                            token=MetaBlock(
                                dims[i],
                                stages[i].token(dims[i], OPS),
                                norm=nn.GroupNorm(1, dims[i]),
                                **residual,
                            ),
                            channel=MetaBlock(
                                dims[i],
                                stages[i].channel(dims[i], OPS),
                                norm=nn.GroupNorm(1, dims[i]),
                                **residual,
                            ),
                        )
                    )
                )
            self.stages.append(
                nn.Sequential(OrderedDict(downsample=downsample, blocks=nn.Sequential(*blocks)))
            )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.init_head(dims[-1], num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.apply(init_trunc_normal)

    def forward_features(self, x: Tensor) -> Tensor:
        check_images(x, self.in_chans, "PoolFormer")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.norm(self.global_pool(x)))
        return x if pre_logits else self.head(x)


#: Every architectural argument of each variant, spelled out once.
POOLFORMER = dict(
    token_mixers="pooling", token_acts=None, channel_mixers="ffn", channel_acts=None,
    token_kernels=3, mlp_ratio=4.0, layer_scale=1e-5, drop_rate=0.0, global_pool="avg",
)  # fmt: skip
VARIANTS: dict[str, dict] = {
    # timm's poolformer_s12 (PoolFormer paper, S12)
    "poolformer_s12": dict(
        POOLFORMER, depths=(2, 2, 6, 2), dims=(64, 128, 320, 512), drop_path_rate=0.1
    ),
    # a tiny model for CI
    "poolformer_test": dict(
        POOLFORMER, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), drop_path_rate=0.0
    ),
}


for _name, _args in VARIANTS.items():
    register_architecture(
        _name, PoolFormer, _args, task_args=("num_classes", "in_chans"), example=_example,
        test_task={"num_classes": 3, "in_chans": 3},
    )  # fmt: skip
