"""Inference shortcuts of MetaMixer: in-place GELU and position-wise slicing give the same outputs."""

import pytest
import torch
from torch import nn

from metamixer.core import DenseOps, MetaMixer, convnext_mixer, ffn
from metamixer.core import mixer as mixer_module


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(mixer_module, "SLICE_ELEMENTS", 1000)


def _count_key_calls(mixer: MetaMixer) -> list[tuple]:
    shapes = []
    mixer.key.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    return shapes


@pytest.mark.parametrize("channels_last", [False, True])
def test_sliced_inference_equals_whole(small_slices, channels_last):
    torch.manual_seed(0)
    mixer = convnext_mixer(8, ops=DenseOps(2), kernel_size=3).eval()
    x = torch.randn(2, 8, 13, 11)
    if channels_last:
        x, mixer = (
            x.to(memory_format=torch.channels_last),
            mixer.to(memory_format=torch.channels_last),
        )
    with torch.no_grad():
        whole = mixer.value(mixer.act(mixer.key(mixer.query(x))))
        calls = _count_key_calls(mixer)
        sliced = mixer(x)
    assert len(calls) == 3 and sum(s[2] for s in calls) == 13  # 2·8·13·11 elements / 1000
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)
    if channels_last:
        assert sliced.is_contiguous(memory_format=torch.channels_last)


def test_training_and_autograd_never_slice(small_slices):
    mixer = ffn(8, ops=DenseOps(2))
    calls = _count_key_calls(mixer)
    x = torch.randn(2, 8, 13, 11)
    mixer(x).sum().backward()  # training mode
    mixer.eval()
    mixer(x)  # gradients on
    assert len(calls) == 2


def test_slicing_needs_position_wise_key_and_value():
    from metamixer.core import self_attention

    attention = self_attention(8, num_heads=2)
    with pytest.raises(ValueError, match="position_axis"):
        MetaMixer(8, query=None, key=attention.key, act="softmax", value=attention.value,
                  position_axis=1)  # fmt: skip


def test_gelu_overwrites_the_key_output_only_at_inference():
    torch.manual_seed(0)
    mixer = ffn(8, ops=DenseOps(2)).eval()
    keys = []
    mixer.key.register_forward_hook(lambda m, i, o: keys.append(o))
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y = mixer(x)
    reference = mixer.value(nn.functional.gelu(mixer.key(x)))
    torch.testing.assert_close(y, reference)
    torch.testing.assert_close(keys[0], nn.functional.gelu(keys[1]))  # overwritten in place

    x.requires_grad_(True)
    mixer(x).sum().backward()  # out of place: autograd still has GELU's input
    expected = torch.autograd.grad(mixer.value(nn.functional.gelu(mixer.key(x))).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_gelu_after_an_identity_key_leaves_the_input_alone():
    mixer = MetaMixer(4, query=None, key=nn.Identity(), act="gelu", value=None).eval()
    x = torch.randn(2, 4)
    before = x.clone()
    with torch.no_grad():
        y = mixer(x)
    torch.testing.assert_close(x, before)
    torch.testing.assert_close(y, nn.functional.gelu(before))
