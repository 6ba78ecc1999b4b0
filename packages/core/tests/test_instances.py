"""The core MetaMixer instances reproduce the reference modules they claim to be."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.core import (
    DenseOps,
    MetaBlock,
    TokenOps,
    convnext_mixer,
    ffn,
    ffnified_attention,
    pooling_mixer,
    self_attention,
)


@pytest.mark.parametrize("heads", [1, 4])
def test_self_attention_equals_multihead_attention(heads):
    torch.manual_seed(0)
    dim = 32
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    nn.init.normal_(ref.in_proj_bias)
    nn.init.normal_(ref.out_proj.bias)
    ours = self_attention(dim, num_heads=heads)
    wq, wk, wv = ref.in_proj_weight.chunk(3)
    bq, bk, bv = ref.in_proj_bias.chunk(3)
    with torch.no_grad():
        for lin, w, b in [
            (ours.query, wq, bq),
            (ours.key.proj, wk, bk),
            (ours.value.proj, wv, bv),
            (ours.value.out, ref.out_proj.weight, ref.out_proj.bias),
        ]:
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    x = torch.randn(3, 10, dim)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_self_attention_on_images_mixes_all_positions():
    attn = self_attention(16, num_heads=2, ops=DenseOps(2)).eval()
    x = torch.randn(1, 16, 4, 5, requires_grad=True)
    attn(x)[0, :, 0, 0].sum().backward()
    assert attn(x).shape == x.shape
    assert (x.grad.abs().sum(1) > 0).all(), "the first output token must see every input token"


def test_ffn_equals_two_layer_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(24, 96), nn.GELU(), nn.Linear(96, 24))
    ours = ffn(24, expansion=4)
    ours.key.load_state_dict(mlp[0].state_dict())
    ours.value.load_state_dict(mlp[2].state_dict())
    x = torch.randn(2, 7, 24)
    torch.testing.assert_close(ours(x), mlp(x))


def test_ffn_on_channels_first_equals_mlp_per_position():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    ours = ffn(8, ops=DenseOps(2), expansion=2, act="relu")
    with torch.no_grad():
        ours.key.weight.copy_(mlp[0].weight[..., None, None])
        ours.key.bias.copy_(mlp[0].bias)
        ours.value.weight.copy_(mlp[2].weight[..., None, None])
        ours.value.bias.copy_(mlp[2].bias)
    x = torch.randn(2, 8, 3, 5)
    expected = mlp(x.movedim(1, -1)).movedim(-1, 1)
    torch.testing.assert_close(ours(x), expected, atol=1e-6, rtol=1e-5)


def test_pooling_mixer_is_pool_minus_input():
    mixer = pooling_mixer(4, ops=DenseOps(2), pool_size=3)
    x = torch.randn(1, 4, 6, 6)
    expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x
    torch.testing.assert_close(mixer(x), expected)


def test_ffnified_attention_is_query_key_act_value():
    torch.manual_seed(0)
    mixer = ffnified_attention(6, ops=DenseOps(2), kernel_size=5, value_kernel_size=3).eval()
    x = torch.randn(2, 6, 9, 9)
    q = mixer.query(x)
    expected = F.conv2d(
        F.gelu(F.conv2d(q, mixer.key.weight, mixer.key.bias, padding=2, groups=6)),
        mixer.value.weight,
        mixer.value.bias,
        padding=1,
        groups=6,
    )
    torch.testing.assert_close(mixer(x), expected, atol=1e-6, rtol=1e-5)


def test_meta_block_adds_scaled_contribution():
    mixer = ffn(8, expansion=2)
    block = MetaBlock(8, mixer, norm=nn.LayerNorm(8), layer_scale=0.5, channel_axis=-1).eval()
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(block(x), x + 0.5 * mixer(block.norm(x)))


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    block = MetaBlock(4, nn.Identity(), drop_path=0.5).train()
    x = torch.ones(64, 4, 3)
    delta = block(x) - x
    per_sample = delta.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0 < (per_sample == 0).all(1).sum() < 64


TOKENS, CHANNELS_FIRST = -1, 1
INSTANCES = {  # name: (constructor, input shape, channel axis)
    "self_attention_tokens": (lambda: self_attention(16, num_heads=4), (2, 5, 16), TOKENS),
    "self_attention_2d": (
        lambda: self_attention(16, num_heads=4, ops=DenseOps(2)),
        (2, 16, 4, 4),
        CHANNELS_FIRST,
    ),
    "ffn_tokens": (lambda: ffn(16, drop=0.1), (2, 5, 16), TOKENS),
    "ffn_1d": (lambda: ffn(16, ops=DenseOps(1)), (2, 16, 9), CHANNELS_FIRST),
    "convnext_2d": (lambda: convnext_mixer(16, ops=DenseOps(2)), (2, 16, 8, 8), CHANNELS_FIRST),
    "convnext_bn_rep_1d": (
        lambda: convnext_mixer(
            16, ops=DenseOps(1), kernel_size=9, small_kernel=3, conv_norm=True, query_norm=None
        ),
        (2, 16, 20),
        CHANNELS_FIRST,
    ),
    "ffnified_2d": (
        lambda: ffnified_attention(16, ops=DenseOps(2), kernel_size=3),
        (2, 16, 8, 8),
        CHANNELS_FIRST,
    ),
    "ffnified_rep_1d": (
        lambda: ffnified_attention(16, ops=DenseOps(1), kernel_size=51, small_kernel=5),
        (2, 16, 60),
        CHANNELS_FIRST,
    ),
    "ffnified_3d": (
        lambda: ffnified_attention(8, ops=DenseOps(3), kernel_size=3),
        (1, 8, 4, 4, 4),
        CHANNELS_FIRST,
    ),
    "pooling_2d": (lambda: pooling_mixer(16, ops=DenseOps(2)), (2, 16, 8, 8), CHANNELS_FIRST),
}


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    build, shape, channel_axis = INSTANCES[name]
    block = MetaBlock(shape[channel_axis], build(), layer_scale=1.0, channel_axis=channel_axis)
    x = torch.randn(shape, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
    assert x.grad.abs().sum() > 0


def test_token_ops_refuse_depthwise_with_a_clear_error():
    with pytest.raises(NotImplementedError, match="DenseOps"):
        TokenOps().depthwise(8, 3)


def test_convnext_rejects_unknown_query_norm():
    with pytest.raises(ValueError, match="unknown norm kind"):
        convnext_mixer(8, ops=DenseOps(2), query_norm="group")
