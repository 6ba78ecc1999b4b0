"""metamixer.core: the MetaMixer abstraction, its instances and structural re-parameterization.

Imports torch only.  A MetaMixer is ``value(act(key(query(x))))``; ``MetaBlock`` adds pre-norm,
residual, drop-path and layer-scale.  The instance constructors (self-attention, FFN, ConvNeXt block,
FFNified attention, pooling) take an ops bundle so one definition serves 1D, 2D and sparse 3D.
"""

from .activations import ACTIVATIONS, GELU, build_activation
from .instances import (
    TOKEN_MIXERS,
    AttentionKey,
    AttentionValue,
    SpatialOps,
    build_token_mixer,
    convnext_mixer,
    ffn,
    ffnified_attention,
    pooling_mixer,
    self_attention,
)
from .mixer import DropPath, LayerScale, MetaBlock, MetaMixer, UsesInput
from .ops import (
    BNConv,
    ChannelsFirstAsTokens,
    ConvBN,
    DenseOps,
    LayerNormChannels,
    PointwiseShortcut,
    PoolMinusInput,
    RepDWConv,
    TokenOps,
    init_trunc_normal,
)
from .profile import count_macs, count_params
from .reparam import ConvFamily, DenseConvs, FusableConv, reparameterize_model

__all__ = [
    "ACTIVATIONS",
    "GELU",
    "TOKEN_MIXERS",
    "AttentionKey",
    "AttentionValue",
    "BNConv",
    "ChannelsFirstAsTokens",
    "ConvBN",
    "ConvFamily",
    "DenseConvs",
    "DenseOps",
    "DropPath",
    "FusableConv",
    "LayerNormChannels",
    "LayerScale",
    "MetaBlock",
    "MetaMixer",
    "PointwiseShortcut",
    "PoolMinusInput",
    "RepDWConv",
    "SpatialOps",
    "TokenOps",
    "UsesInput",
    "build_activation",
    "build_token_mixer",
    "convnext_mixer",
    "count_macs",
    "count_params",
    "ffn",
    "ffnified_attention",
    "init_trunc_normal",
    "pooling_mixer",
    "reparameterize_model",
    "self_attention",
]
