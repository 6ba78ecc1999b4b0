import pytest
import torch
from torch import nn

from metamixer.core import ACTIVATIONS, build_activation


def test_every_required_name_is_registered():
    assert {"gelu", "relu", "softmax", "sigmoid", "identity"} <= set(ACTIVATIONS)


def test_misspelled_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_activation("gleu", axis=1)
    message = str(err.value)
    assert "'gleu'" in message
    for name in ("gelu", "relu", "softmax", "sigmoid", "identity"):
        assert name in message


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_normalises_over_the_chosen_axis(axis):
    x = torch.randn(2, 5, 7)
    y = build_activation("softmax", axis=axis)(x)
    torch.testing.assert_close(y.sum(axis), torch.ones_like(y.sum(axis)))
    other = 2 if axis == 1 else 1
    assert not torch.allclose(y.sum(other), torch.ones_like(y.sum(other)))


def test_module_passes_through():
    act = nn.Hardswish()
    assert build_activation(act, axis=1) is act
