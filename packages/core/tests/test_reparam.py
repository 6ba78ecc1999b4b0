"""Structural re-parameterization keeps eval-mode outputs and removes every foldable BatchNorm."""

import pytest
import torch
from metamixer_testing import count_modules, randomize_batchnorm
from torch import nn

from metamixer.core import (
    BNConv,
    ConvBN,
    DenseOps,
    MetaBlock,
    PointwiseShortcut,
    RepDWConv,
    convnext_mixer,
    ffn,
    ffnified_attention,
    reparameterize_model,
)
from metamixer.core.reparam import interleave_channels

ATOL = 1e-5


def spatial_shape(ndim, size):
    return (size,) * ndim


def assert_same_after_folding(module, x, *, atol=ATOL):
    randomize_batchnorm(module, seed=1)
    module.eval()
    with torch.no_grad():
        before = module(x)
        n_before = count_modules(module)
        reparameterize_model(module)
        after = module(x)
    assert count_modules(module, nn.modules.batchnorm._BatchNorm) == 0
    assert count_modules(module) < n_before
    torch.testing.assert_close(after, before, atol=atol, rtol=1e-5)
    return module


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("kernels", [(7, 3), (51, 5), (3, 1), (5, 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_large_plus_small_kernel_folds(ndim, kernels, stride):
    large, small = kernels
    torch.manual_seed(0)
    size = 64 if ndim == 1 else 17
    x = torch.randn((2, 6, *spatial_shape(ndim, size)))
    conv = RepDWConv(6, large, small, ndim=ndim, stride=stride)
    nn.init.normal_(conv.large.conv.weight, std=0.1)
    nn.init.normal_(conv.small.conv.weight, std=0.3)
    folded = assert_same_after_folding(conv, x)
    assert folded.fused.kernel_size == (large,) * ndim
    assert folded.fused.padding == (large // 2,) * ndim
    assert folded.fused.stride == (stride,) * ndim


def test_channel_multiplier_and_3d_fold():
    torch.manual_seed(0)
    conv = RepDWConv(4, 5, 3, out_channels=8, ndim=3, stride=2)
    assert_same_after_folding(conv, torch.randn(1, 4, 9, 9, 9))


@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_multiplier_runs_as_pure_depthwise_convs(channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 11)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    conv = assert_same_after_folding(RepDWConv(4, 7, 3, out_channels=12, stride=2), x)
    assert [(c.in_channels, c.out_channels, c.groups) for c in conv.fused] == [(4, 4, 4)] * 3
    assert conv(x).is_contiguous(memory_format=torch.channels_last) == channels_last
    weight, bias = conv.kernel_bias()  # back in grouped-conv order: the plain conv agrees
    expected = nn.functional.conv2d(x, weight, bias, stride=2, padding=3, groups=4)
    torch.testing.assert_close(conv(x), expected, atol=ATOL, rtol=1e-5)


def test_interleave_channels():
    parts = [torch.randn(2, 3, 4, 5) for _ in range(2)]
    y = interleave_channels(parts)
    for c in range(3):
        for j in range(2):
            assert torch.equal(y[:, 2 * c + j], parts[j][:, c])
    z = interleave_channels([p.contiguous(memory_format=torch.channels_last) for p in parts])
    assert z.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(z, y)
    assert torch.equal(interleave_channels([p[0] for p in parts], dim=0), y[0])


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_bn_folds(ndim):
    torch.manual_seed(0)
    conv = ConvBN(6, 12, 3, ndim=ndim, groups=3, stride=2)
    assert_same_after_folding(conv, torch.randn((2, 6, *spatial_shape(ndim, 7))))


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_bn_conv_folds(ndim, bias):
    torch.manual_seed(0)
    conv = BNConv(6, 10, ndim=ndim, bias=bias)
    assert_same_after_folding(conv, torch.randn((2, 6, *spatial_shape(ndim, 7))))


@pytest.mark.parametrize("ndim", [1, 2])
def test_identity_shortcut_folds(ndim):
    torch.manual_seed(0)
    block = PointwiseShortcut(6, ndim=ndim)
    assert_same_after_folding(block, torch.randn((2, 6, *spatial_shape(ndim, 5))))


def test_folding_twice_is_harmless():
    conv = RepDWConv(3, 7, 3).eval()
    x = torch.randn(1, 3, 10, 10)
    reparameterize_model(conv)
    once = conv(x)
    reparameterize_model(conv)
    torch.testing.assert_close(conv(x), once)


@pytest.mark.parametrize("kernels", [(8, 3), (7, 4)])
def test_even_kernels_are_rejected(kernels):
    with pytest.raises(ValueError, match="odd"):
        RepDWConv(3, *kernels)


def build_core_model(ndim, dim=8, kernel=7, small=3):
    """A small network of core instances with every foldable module kind."""
    ops = DenseOps(ndim)
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[ndim]
    blocks = [conv(3, dim, 3, padding=1)]
    for _ in range(2):
        blocks.append(
            MetaBlock(
                dim,
                ffnified_attention(dim, ops=ops, kernel_size=kernel, small_kernel=small),
                layer_scale=0.5,
            )
        )
        blocks.append(
            MetaBlock(
                dim,
                convnext_mixer(
                    dim,
                    ops=ops,
                    kernel_size=kernel,
                    small_kernel=small,
                    conv_norm=True,
                    query_norm=None,
                ),
            )
        )
        blocks.append(MetaBlock(dim, ffn(dim, ops=ops, expansion=2)))
    blocks.append(ops.depthwise(dim, kernel, out_dim=2 * dim, stride=2, small_kernel=small))
    blocks.append(PointwiseShortcut(2 * dim, ndim=ndim))
    blocks.append(ops.pointwise(2 * dim, dim, norm=True))
    return nn.Sequential(*blocks)


@pytest.mark.parametrize("ndim,kernels", [(1, (51, 5)), (1, (7, 3)), (2, (7, 3)), (2, (5, 1))])
def test_model_built_from_core_instances_folds(ndim, kernels):
    torch.manual_seed(0)
    model = build_core_model(ndim, kernel=kernels[0], small=kernels[1])
    size = 96 if ndim == 1 else 16
    x = torch.randn((2, 3, *spatial_shape(ndim, size)))
    assert_same_after_folding(model, x, atol=1e-4 if kernels[0] > 7 else ATOL)


def test_fused_model_still_trains():
    model = reparameterize_model(build_core_model(2).eval()).train()
    out = model(torch.randn(2, 3, 8, 8))
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
