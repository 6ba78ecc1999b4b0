"""The MetaMixer instances of the paper, each defined once for every modality.

Each constructor takes an ops bundle (``DenseOps(ndim)``, ``TokenOps()`` or a modality's own, e.g.
sparse 3D) that realises the pointwise / depthwise / norm / pool operations.

=====================  ==================  =====================  ========  ==================
instance               query               key                    act       value
=====================  ==================  =====================  ========  ==================
self_attention         W_q x               q (W_k x)^T / sqrt(d)  softmax   coef (W_v x) W_o
ffn                    identity            W1                     gelu      W2
convnext_mixer         depthwise k + norm  W1 (expand)            gelu      W2 (project)
ffnified_attention     pointwise (+BN)     depthwise k1           gelu      depthwise k2
pooling_mixer          identity            avgpool(q) - q         identity  identity
=====================  ==================  =====================  ========  ==================
"""

from __future__ import annotations

from torch import Tensor, nn

from .mixer import MetaMixer, UsesInput
from .ops import PoolMinusInput, SpatialOps, TokenOps
from .registry import MixerContext, register_channel_mixer, register_token_mixer

TOKEN_OPS = TokenOps()


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


class AttentionKey(UsesInput, nn.Module):
    """Q-K interaction of self-attention: ``softmax``-ready logits ``q (W_k x)^T / sqrt(d_head)``.

    Input ``q, x``: ``(B, N, C)``.  Output: ``(B, heads, N_q, N_k)``.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, q: Tensor, x: Tensor) -> Tensor:
        q = _split_heads(q, self.num_heads)
        k = _split_heads(self.proj(x), self.num_heads)
        return (q * self.scale) @ k.transpose(-2, -1)


class AttentionValue(UsesInput, nn.Module):
    """Coef-V interaction: ``coef (W_v x)``, heads merged, then the output projection ``W_o``."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out = nn.Linear(dim, dim, bias=bias)

    def forward(self, coef: Tensor, x: Tensor) -> Tensor:
        v = _split_heads(self.proj(x), self.num_heads)
        mixed = self.attn_drop(coef) @ v  # (B, heads, N, d)
        return self.out(mixed.transpose(1, 2).flatten(2))


def self_attention(
    dim: int,
    *,
    num_heads: int = 8,
    ops: SpatialOps = TOKEN_OPS,
    bias: bool = True,
    attn_drop: float = 0.0,
    act: str | nn.Module = "softmax",
) -> nn.Module:
    """Multi-head self-attention as a MetaMixer; with dense ops it mixes all spatial positions."""
    mixer = MetaMixer(
        dim,
        query=nn.Linear(dim, dim, bias=bias),
        key=AttentionKey(dim, num_heads, bias),
        act=act,
        value=AttentionValue(dim, num_heads, bias, attn_drop),
        act_axis=-1,
    )
    return ops.as_tokens(mixer)


def _then_dropout(module: nn.Module, p: float) -> nn.Module:
    """``module`` followed by dropout (a Sequential is extended, keeping its parameter names)."""
    if p == 0.0:
        return module
    parts = list(module) if isinstance(module, nn.Sequential) else [module]
    return nn.Sequential(*parts, nn.Dropout(p))


def ffn(
    dim: int,
    *,
    ops: SpatialOps = TOKEN_OPS,
    expansion: float = 4.0,
    act: str | nn.Module = "gelu",
    drop: float = 0.0,
    proj_drop: float = 0.0,
    query: nn.Module | None = None,
) -> MetaMixer:
    """The feed-forward network: static keys ``W1`` and values ``W2`` over channels.

    ``drop`` is dropout on the hidden coefficients (before the activation), ``proj_drop`` on the
    output; ``query``: a module the input passes first (``None``: the identity).
    """
    hidden = int(dim * expansion)
    return MetaMixer(
        dim,
        query=query,
        key=_then_dropout(ops.pointwise(dim, hidden), drop),
        act=act,
        value=_then_dropout(ops.project(hidden, dim), proj_drop),
        act_axis=ops.channel_axis,
        mixes="channels",
    )


def convnext_mixer(
    dim: int,
    *,
    ops: SpatialOps,
    kernel_size: int = 7,
    small_kernel: int | None = None,
    conv_norm: bool = False,
    query_norm: str | None = "layer",
    expansion: float = 4.0,
    act: str | nn.Module = "gelu",
    drop: float = 0.0,
    proj_drop: float = 0.0,
) -> MetaMixer:
    """ConvNeXt block as a MetaMixer: a depthwise conv (+ norm) queries an FFN.

    Args:
        kernel_size: depthwise kernel of the query.
        small_kernel: train the query conv with a parallel small kernel (each branch with BN).
        conv_norm: bias-free conv followed by BN, foldable (FFNet); implied by ``small_kernel``.
        query_norm: a norm after the query conv: "layer" (ConvNeXt), "batch", or ``None``.
        expansion: hidden width / dim of the FFN.
        drop: dropout on the hidden coefficients; ``proj_drop``: on the output.
    """
    query = ops.depthwise(dim, kernel_size, small_kernel=small_kernel, norm=conv_norm)
    if query_norm is not None:
        query = nn.Sequential(query, ops.norm(dim, query_norm))
    return ffn(
        dim, ops=ops, expansion=expansion, act=act, drop=drop, proj_drop=proj_drop, query=query
    )


def ffnified_attention(
    dim: int,
    *,
    ops: SpatialOps,
    kernel_size: int = 7,
    value_kernel_size: int | None = None,
    small_kernel: int | None = None,
    conv_norm: bool = False,
    query_norm: bool = True,
    act: str | nn.Module = "gelu",
) -> MetaMixer:
    """FFNified attention: static depthwise-conv keys and values over tokens.

    Args:
        kernel_size: key kernel (the Q-K interaction); ``value_kernel_size`` defaults to it.
        small_kernel: train key and value as large + small parallel branches, each with BN (a
            value kernel no larger than it: one conv + BN).
        conv_norm: BN after each single-branch depthwise conv (implied by ``small_kernel``).
        query_norm: the layout's query projection (``ops.query``) bias-free + norm, else with bias.
    """
    value_kernel_size = kernel_size if value_kernel_size is None else value_kernel_size
    # a value kernel no larger than the small branch is one conv + BN
    value_small = small_kernel if small_kernel and small_kernel < value_kernel_size else None
    return MetaMixer(
        dim,
        query=ops.query(dim, norm=query_norm),
        key=ops.depthwise(dim, kernel_size, small_kernel=small_kernel, norm=conv_norm),
        act=act,
        value=ops.depthwise(
            dim,
            value_kernel_size,
            small_kernel=value_small,
            norm=conv_norm or small_kernel is not None,
        ),
        act_axis=ops.channel_axis,
    )


def pooling_mixer(dim: int, *, ops: SpatialOps, pool_size: int = 3) -> MetaMixer:
    """PoolFormer's token mixer: ``avgpool(x) - x`` with identity query, activation and value."""
    return MetaMixer(
        dim,
        query=None,
        key=PoolMinusInput(ops.avg_pool(pool_size)),
        act="identity",
        value=None,
        act_axis=ops.channel_axis,
    )


def attention_heads(dim: int, num_heads: int | None = None) -> int:
    """``num_heads`` if given, else ``dim // 32`` lowered to a divisor of ``dim`` (at least 1)."""
    if num_heads is not None:
        return num_heads
    heads = max(1, dim // 32)
    while dim % heads:
        heads -= 1
    return heads


# --- the built-in mixers, registered like a user's -------------------------------------------------


@register_token_mixer("ffnified")
def _ffnified(c: MixerContext) -> nn.Module:
    return ffnified_attention(
        c.dim, ops=c.ops, kernel_size=c.kernel_size, value_kernel_size=c.value_kernel_size,
        small_kernel=c.small_kernel, conv_norm=c.conv_norm, query_norm=c.query_norm is not None,
        act=c.activation("gelu"),
    )  # fmt: skip


@register_token_mixer("attention")
def _attention(c: MixerContext) -> nn.Module:
    dim = c.ops.channels(c.dim)
    return self_attention(
        dim, num_heads=attention_heads(dim, c.num_heads), ops=c.ops, act=c.activation("softmax")
    )


@register_token_mixer("pooling", acts=("identity",))
def _pooling(c: MixerContext) -> nn.Module:
    return pooling_mixer(c.dim, ops=c.ops, pool_size=c.kernel_size)


@register_token_mixer("identity", acts=("identity",))
@register_channel_mixer("identity", acts=("identity",))
def _identity(c: MixerContext) -> nn.Module:
    return nn.Identity()


@register_channel_mixer("convnext")
def _convnext(c: MixerContext) -> nn.Module:
    return convnext_mixer(
        c.dim, ops=c.ops, kernel_size=c.kernel_size, small_kernel=c.small_kernel,
        conv_norm=c.conv_norm, query_norm=c.query_norm, expansion=c.mlp_ratio,
        act=c.activation("gelu"), drop=c.drop, proj_drop=c.proj_drop,
    )  # fmt: skip


@register_channel_mixer("ffn")
def _ffn(c: MixerContext) -> nn.Module:
    return ffn(
        c.dim, ops=c.ops, expansion=c.mlp_ratio, act=c.activation("gelu"), drop=c.drop,
        proj_drop=c.proj_drop,
    )  # fmt: skip
