"""Structural re-parameterization keeps eval-mode outputs and removes every foldable BatchNorm."""

import pytest
import torch
from core_models import build_core_model
from metamixer_testing import count_modules, randomize_batchnorm
from torch import nn

from metamixer.core import (
    BNConv,
    ConvBN,
    PointwiseShortcut,
    RepDWConv,
    reparameterize_model,
)

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


def test_channel_multiplier_folds_into_one_grouped_conv():
    """The fused form is target-neutral: one conv with the training-time grouping."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 11)
    conv = assert_same_after_folding(RepDWConv(4, 7, 3, out_channels=12, stride=2), x)
    assert type(conv.fused) is nn.Conv2d
    assert (conv.fused.in_channels, conv.fused.out_channels, conv.fused.groups) == (4, 12, 4)
    assert sorted(conv.state_dict()) == ["fused.bias", "fused.weight"]


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
