"""metamixer.core: the MetaMixer abstraction, its instances and structural re-parameterization.

Imports torch only.  A MetaMixer is ``value(act(key(query(x))))``; ``MetaBlock`` adds pre-norm,
residual, drop-path and layer-scale.  The instance constructors (self-attention, FFN, ConvNeXt block,
FFNified attention, pooling) take an ops bundle so one definition serves 1D, 2D and sparse 3D; they
are registered by name (``TOKEN_MIXERS``, ``CHANNEL_MIXERS``) next to any mixer a user registers,
and every network names its mixers per stage.  ``ARCHITECTURES`` holds every model variant;
``deploy`` applies the explicit deployment passes (folding, CPU kernels, memory format).
"""

from .activations import ACTIVATIONS, build_activation
from .architectures import (
    ARCHITECTURES,
    Architecture,
    build_network,
    network_args,
    network_from_checkpoint,
    register_architecture,
)
from .deploy import PASSES, RECIPES, apply_passes, deploy, register_pass
from .instances import (
    AttentionKey,
    AttentionValue,
    attention_heads,
    convnext_mixer,
    ffn,
    ffnified_attention,
    pooling_mixer,
    self_attention,
)
from .mixer import DropPath, LayerScale, MetaBlock, MetaMixer, UsesInput
from .ops import (
    ChannelsFirstAsTokens,
    DenseOps,
    LayerNormChannels,
    PoolMinusInput,
    SpatialOps,
    TokenOps,
    init_trunc_normal,
)
from .profile import count_macs, count_params
from .registry import (
    CHANNEL_MIXERS,
    TOKEN_MIXERS,
    MixerContext,
    register_channel_mixer,
    register_token_mixer,
    stage_values,
)
from .reparam import (
    BNConv,
    ConvBN,
    ConvFactory,
    DenseConvs,
    FusableConv,
    PointwiseShortcut,
    RepDWConv,
    reparameterize_model,
)
from .settings import MixerSettings, StageSettings

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "CHANNEL_MIXERS",
    "PASSES",
    "RECIPES",
    "TOKEN_MIXERS",
    "Architecture",
    "AttentionKey",
    "AttentionValue",
    "BNConv",
    "ChannelsFirstAsTokens",
    "ConvBN",
    "ConvFactory",
    "DenseConvs",
    "DenseOps",
    "DropPath",
    "FusableConv",
    "LayerNormChannels",
    "LayerScale",
    "MetaBlock",
    "MetaMixer",
    "MixerContext",
    "MixerSettings",
    "PointwiseShortcut",
    "PoolMinusInput",
    "RepDWConv",
    "SpatialOps",
    "StageSettings",
    "TokenOps",
    "UsesInput",
    "apply_passes",
    "attention_heads",
    "build_activation",
    "build_network",
    "convnext_mixer",
    "count_macs",
    "count_params",
    "deploy",
    "ffn",
    "ffnified_attention",
    "init_trunc_normal",
    "network_args",
    "network_from_checkpoint",
    "pooling_mixer",
    "register_architecture",
    "register_channel_mixer",
    "register_pass",
    "register_token_mixer",
    "reparameterize_model",
    "self_attention",
    "stage_values",
]
