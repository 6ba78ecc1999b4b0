"""ERF, coefficient sparsity and coefficient maps through hooks on MetaMixer sub-operations."""

import pytest
import torch
from torch import nn

from metamixer.core import DenseOps, MetaBlock, convnext_mixer, ffnified_attention
from metamixer.lab.analysis import (
    coefficient_maps,
    coefficient_sparsity,
    effective_receptive_field,
    erf_area_ratios,
)


def tiny_ffnet(kernel=7):
    ops = DenseOps(2)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        MetaBlock(8, ffnified_attention(8, ops=ops, kernel_size=kernel)),
        MetaBlock(8, convnext_mixer(8, ops=ops, kernel_size=3, conv_norm=True, query_norm=None)),
    ).eval()


def test_erf_of_a_single_conv_is_its_kernel_footprint():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    erf = effective_receptive_field(conv, [torch.randn(1, 1, 9, 9) for _ in range(2)])
    nonzero = (erf > 0).nonzero()
    assert nonzero.min(0).values.tolist() == [3, 3] and nonzero.max(0).values.tolist() == [5, 5]


def test_area_ratios_grow_with_the_kernel():
    torch.manual_seed(0)
    images = [torch.randn(1, 3, 33, 33) for _ in range(3)]
    small = erf_area_ratios(effective_receptive_field(tiny_ffnet(3), images))
    large = erf_area_ratios(effective_receptive_field(tiny_ffnet(11), images))
    assert large[0.99] > small[0.99]
    assert all(0 < v <= 1 for v in small.values()) and small[0.2] <= small[0.99]


def test_area_ratio_of_a_point_is_one_pixel():
    erf = torch.zeros(11, 11)
    erf[5, 5] = 1.0
    assert erf_area_ratios(erf, (0.5,))[0.5] == pytest.approx(1 / 121)


def test_sparsity_reports_every_mixer_in_depth_order():
    torch.manual_seed(0)
    rows = coefficient_sparsity(tiny_ffnet(), [torch.randn(2, 3, 16, 16)])
    assert [r["mixes"] for r in rows] == ["tokens", "channels"]
    assert all(0 < r["active"] < 1 for r in rows)  # GELU coefficients: some positive, some not


def test_coefficient_maps_pick_the_strongest_keys():
    torch.manual_seed(0)
    model = tiny_ffnet()
    x = torch.randn(1, 3, 16, 16)
    maps, channels = coefficient_maps(model, x, "1.mixer", top_k=3)
    seen = []  # the coefficients, read independently of the analysis hooks
    handle = model[1].mixer.act.register_forward_hook(lambda m, i, o: seen.append(o[0].clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    strength = seen[0].flatten(1).mean(1)
    assert maps.shape == (3, 16, 16)
    assert set(channels.tolist()) == set(strength.argsort(descending=True)[:3].tolist())
    torch.testing.assert_close(maps, seen[0][channels])
    assert strength[channels].min() > strength[strength.argsort()[:-3]].max()
    with pytest.raises(ValueError, match="no MetaMixer named"):
        coefficient_maps(model, torch.randn(1, 3, 16, 16), "missing")
