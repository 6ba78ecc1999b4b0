"""The forecaster's CPU fast paths equal the ordinary ops: grouped 1×1 conv and dropout."""

import pytest
import torch
import torch.nn.functional as F

from metamixer.timeseries.ops import Dropout, PointwiseConv1d


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "groups", "bias"),
    [(32, 384, 1, True), (384, 32, 32, True), (21, 42, 7, False), (6, 3, 3, True)],
)
def test_pointwise_conv_matches_grouped_conv1d(in_channels, out_channels, groups, bias):
    torch.manual_seed(0)
    conv = PointwiseConv1d(in_channels, out_channels, groups=groups, bias=bias)
    x = torch.randn(5, in_channels, 11, requires_grad=True)
    out = conv(x)
    x_ref = x.detach().clone().requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in conv.parameters()]
    ref = F.conv1d(x_ref, params[0], params[1] if bias else None, groups=groups)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(conv.parameters(), params, strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_1_minus_p_and_preserves_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    out = Dropout(p)(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=3e-3)
    assert out.mean().item() == pytest.approx(1.0, abs=2e-2)
    torch.testing.assert_close(
        out[kept], torch.full_like(out[kept], 1 / (1 - p)), rtol=1e-4, atol=0
    )
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())  # gradient = mask × scale


def test_dropout_is_the_identity_in_eval_and_at_p0_and_zero_at_p1():
    x = torch.randn(64, 8)
    assert torch.equal(Dropout(0.9).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.count_nonzero(Dropout(1.0)(x)) == 0


def test_dropout_masks_follow_the_seed():
    x = torch.ones(1000)
    torch.manual_seed(3)
    first = Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.5)(x), first)
    assert not torch.equal(Dropout(0.5)(x), first)
