"""The CPU kernels that deployment passes swap in equal the modules they replace, in values and
gradients: banded depthwise conv1d, integer-mask dropout, interleaved multiplier convs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.core.cpu_kernels import (
    BandedDepthwiseConv1d,
    IntegerMaskDropout,
    InterleavedDepthwise,
    banded_matrix,
    interleave_channels,
)


def depthwise_conv1d(channels: int, kernel: int, cls: type = BandedDepthwiseConv1d) -> nn.Conv1d:
    return cls(channels, channels, kernel, padding=kernel // 2, groups=channels)


@pytest.mark.parametrize(("kernel", "length"), [(51, 48), (51, 102), (51, 103), (13, 20), (3, 5)])
def test_matches_grouped_conv1d_forward_and_backward(kernel, length):
    torch.manual_seed(0)
    conv = depthwise_conv1d(6, kernel)
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


def test_banded_kernel_fits_only_plain_depthwise_stride_1_convs():
    assert BandedDepthwiseConv1d.fits(depthwise_conv1d(8, 51, nn.Conv1d))
    assert not BandedDepthwiseConv1d.fits(nn.Conv1d(8, 8, 51, stride=2, padding=25, groups=8))
    assert not BandedDepthwiseConv1d.fits(nn.Conv1d(8, 8, 51, padding=0, groups=8))
    assert not BandedDepthwiseConv1d.fits(nn.Conv1d(8, 16, 5, padding=2, groups=8))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_integer_mask_dropout_keeps_1_minus_p_and_preserves_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    out = IntegerMaskDropout(p)(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=3e-3)
    assert out.mean().item() == pytest.approx(1.0, abs=2e-2)
    torch.testing.assert_close(
        out[kept], torch.full_like(out[kept], 1 / (1 - p)), rtol=1e-4, atol=0
    )
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())  # gradient = mask × scale


def test_integer_mask_dropout_is_the_identity_in_eval_and_at_p0_and_zero_at_p1():
    x = torch.randn(64, 8)
    assert torch.equal(IntegerMaskDropout(0.9).eval()(x), x)
    assert torch.equal(IntegerMaskDropout(0.0)(x), x)
    assert torch.count_nonzero(IntegerMaskDropout(1.0)(x)) == 0


def test_integer_mask_dropout_masks_follow_the_seed():
    x = torch.ones(1000)
    torch.manual_seed(3)
    first = IntegerMaskDropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(IntegerMaskDropout(0.5)(x), first)
    assert not torch.equal(IntegerMaskDropout(0.5)(x), first)


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


@pytest.mark.parametrize("channels_last", [False, True])
def test_interleaved_multiplier_conv_equals_the_grouped_conv(channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 12, 7, stride=2, padding=3, groups=4)
    x = torch.randn(2, 4, 11, 11)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    split = InterleavedDepthwise(conv)
    assert [(c.in_channels, c.out_channels, c.groups) for c in split.parts] == [(4, 4, 4)] * 3
    torch.testing.assert_close(split(x), conv(x), atol=1e-5, rtol=1e-5)
    assert split(x).is_contiguous(memory_format=torch.channels_last) == channels_last
    with pytest.raises(ValueError, match="channel multiplier"):
        InterleavedDepthwise(nn.Conv2d(4, 4, 3, padding=1, groups=4))
