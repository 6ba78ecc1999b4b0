"""The banded-matrix 1D depthwise conv equals ``conv1d(groups=C)`` in values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from metamixer.core import reparameterize_model
from metamixer.core.banded import DepthwiseConv1d, banded_matrix
from metamixer.core.ops import DenseOps


@pytest.mark.parametrize(("kernel", "length"), [(51, 48), (51, 102), (51, 103), (13, 20), (3, 5)])
def test_matches_grouped_conv1d_forward_and_backward(kernel, length):
    torch.manual_seed(0)
    conv = DepthwiseConv1d(6, kernel)
    x = torch.randn(4, 6, length, requires_grad=True)
    out = conv(x)
    x_ref = x.detach().clone().requires_grad_()
    weight = conv.weight.detach().clone().requires_grad_()
    bias = conv.bias.detach().clone().requires_grad_()
    ref = F.conv1d(x_ref, weight, bias, padding=kernel // 2, groups=6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for ours, theirs in [(x.grad, x_ref.grad), (conv.weight.grad, weight.grad)]:
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.bias.grad, bias.grad)


def test_band_holds_the_kernel_taps_and_zeros_outside():
    weight = torch.arange(1.0, 4.0).view(1, 1, 3)  # taps 1, 2, 3
    band = banded_matrix(weight, 4)[0]
    expected = torch.tensor(
        [[2.0, 1.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 2.0, 1.0], [0.0, 0.0, 3.0, 2.0]]
    )
    torch.testing.assert_close(band, expected)


def test_dense_1d_ops_use_it_and_folding_keeps_it():
    ops = DenseOps(1)
    assert isinstance(ops.depthwise(8, 51), DepthwiseConv1d)
    assert not isinstance(ops.depthwise(8, 51, stride=2), DepthwiseConv1d)
    rep = ops.depthwise(8, 51, small_kernel=5).eval()
    x = torch.randn(2, 8, 48)
    before = rep(x)
    reparameterize_model(rep)
    assert isinstance(rep.fused, DepthwiseConv1d)
    torch.testing.assert_close(rep(x), before, rtol=1e-5, atol=1e-5)


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv1d(4, 50)
