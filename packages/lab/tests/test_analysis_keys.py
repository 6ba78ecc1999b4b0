"""Per-class key statistics, gated-only sparsity and residual (layer-) scales, on hand-made models
whose answers are known."""

import pytest
import torch
from torch import nn

from metamixer.core import DenseOps, MetaBlock, MetaMixer, ffn, pooling_mixer
from metamixer.lab.analysis import (
    coefficient_sparsity,
    key_statistics,
    residual_scale,
    residual_scale_parameters,
    set_residual_scales,
    unequal_residual_scales,
)

#: four keys over two input channels: k0 = x0, k1 = x1, k2 = (x0 + x1) / 2, k3 = -(x0 + x1)
KEYS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, -1.0]])


def hand_made(act: str = "relu") -> nn.Sequential:
    """A 1×1-conv MetaMixer with the keys above, inside a residual block."""
    key = nn.Conv2d(2, 4, 1, bias=False)
    value = nn.Conv2d(4, 2, 1, bias=False)
    with torch.no_grad():
        key.weight.copy_(KEYS[:, :, None, None])
        value.weight.zero_()
    mixer = MetaMixer(2, query=None, key=key, act=act, value=value, mixes="channels")
    return nn.Sequential(MetaBlock(2, mixer)).eval()


def images(x0: float, x1: float, n: int = 1) -> torch.Tensor:
    """``n`` 3×3 images of constant channels (x0, x1)."""
    return torch.tensor([float(x0), float(x1)]).view(1, 2, 1, 1).expand(n, 2, 3, 3).clone()


def batches():
    # class 0: x = (1, 0) and (3, 0) -> relu keys (2, 0, 1, 0) on average
    # class 1: x = (0, 1)            -> (0, 1, 0.5, 0)
    # class 2: x = (-1, -1)          -> (0, 0, 0, 2)
    # class 3: no images
    first = torch.cat([images(1, 0), images(0, 1), images(-1, -1)])
    second = torch.cat([images(-1, -1, 2), images(3, 0)])
    return [(first, torch.tensor([0, 1, 2])), (second, torch.tensor([2, 2, 0]))]


def test_keys_that_fire_above_a_threshold_and_their_sharing():
    (row,) = key_statistics(hand_made(), batches(), num_classes=4, threshold=0.4)
    expected_mean = torch.tensor([[2, 0, 1, 0], [0, 1, 0.5, 0], [0, 0, 0, 2]], dtype=torch.float)
    torch.testing.assert_close(row["mean"], expected_mean)
    assert row["classes_seen"] == [0, 1, 2]  # class 3 had no images
    assert row["fires"].tolist() == [
        [True, False, True, False],
        [False, True, True, False],
        [False, False, False, True],
    ]
    assert row["classes_per_key"].tolist() == [1, 1, 2, 1]
    assert row["active"] == 4 and row["keys"] == 4 and row["mixes"] == "channels"
    assert row["shared_half"] == pytest.approx(1 / 4)  # key 2 fires for 2 of 3 classes
    assert row["shared_all"] == 0.0
    assert row["specific"] == pytest.approx(3 / 4)
    # a higher threshold silences key 2 for class 1 (mean 0.5): nothing is shared any more
    (row,) = key_statistics(hand_made(), batches(), num_classes=4, threshold=0.75)
    assert row["classes_per_key"].tolist() == [1, 1, 1, 1] and row["shared_half"] == 0.0


def test_top_share_picks_each_class_strongest_keys():
    (row,) = key_statistics(hand_made(), batches(), num_classes=4, top_share=0.25)
    assert [r.nonzero().flatten().tolist() for r in row["fires"]] == [[0], [1], [3]]
    assert row["specific"] == 1.0 and row["active"] == 3
    (row,) = key_statistics(hand_made(), batches(), num_classes=4, top_share=0.5)
    assert [sorted(r.nonzero().flatten().tolist()) for r in row["fires"]][:2] == [[0, 2], [1, 2]]


def test_a_key_firing_for_every_class_is_shared_by_all():
    model = hand_made("identity")  # signed coefficients; k2 = (x0 + x1) / 2 = 1 for every class
    data = [(torch.cat([images(2, 0), images(0, 2), images(0.4, 1.6)]), torch.tensor([0, 1, 2]))]
    (row,) = key_statistics(model, data, 3, threshold=0.9, layers=["0.mixer"])
    assert row["classes_per_key"].tolist() == [1, 2, 3, 0]
    assert row["shared_all"] == pytest.approx(1 / 3) and row["active"] == 3
    assert row["shared_half"] == pytest.approx(2 / 3) and row["specific"] == pytest.approx(1 / 3)


def test_key_statistics_reject_bad_labels_and_layers():
    with pytest.raises(ValueError, match="labels must lie in"):
        key_statistics(hand_made(), [(images(1, 0), torch.tensor([5]))], 3)
    with pytest.raises(ValueError, match="1 images but 2 labels"):
        key_statistics(hand_made(), [(images(1, 0), torch.tensor([0, 1]))], 3)
    with pytest.raises(ValueError, match="no MetaMixer named"):
        key_statistics(hand_made(), batches(), 4, layers=["nope"])
    with pytest.raises(ValueError, match="no gated MetaMixer"):
        key_statistics(hand_made("identity"), batches(), 4)


def test_sparsity_leaves_out_the_ungated_pooling_mixer():
    ops = DenseOps(2)
    model = nn.Sequential(
        MetaBlock(4, pooling_mixer(4, ops=ops)), MetaBlock(4, ffn(4, ops=ops, expansion=2))
    ).eval()
    x = [torch.randn(2, 4, 6, 6)]
    rows = coefficient_sparsity(model, x)
    assert [(r["layer"], r["depth"], r["act"]) for r in rows] == [("1.mixer", 1, "GELU")]
    assert [r["layer"] for r in coefficient_sparsity(model, x, gated_only=False)] == [
        "0.mixer",
        "1.mixer",
    ]


def test_residual_scales_are_found_compared_and_set():
    ops = DenseOps(2)
    scaled = nn.Sequential(MetaBlock(4, ffn(4, ops=ops), layer_scale=1e-6))
    plain = nn.Sequential(MetaBlock(4, ffn(4, ops=ops)))
    assert [n for n, _ in residual_scale_parameters(scaled)] == ["0.layer_scale.weight"]
    assert residual_scale(scaled) == pytest.approx(1e-6) and residual_scale(plain) == 1.0
    assert unequal_residual_scales({"a": residual_scale(scaled), "b": residual_scale(plain)})
    assert not unequal_residual_scales({"a": 1e-5, "b": 1e-6 * 2})
    assert set_residual_scales(scaled, 1.0) == 1 and set_residual_scales(plain, 1.0) == 0
    assert residual_scale(scaled) == 1.0


def test_timm_layer_scales_are_residual_scales():
    timm = pytest.importorskip("timm")
    convnext = timm.create_model("convnext_atto", pretrained=False)
    names = [n for n, _ in residual_scale_parameters(convnext)]
    assert len(names) == 12 and all(n.endswith(".gamma") for n in names)
    assert residual_scale(convnext) == pytest.approx(1e-6)
    poolformer = timm.create_model("poolformer_s12", pretrained=False)
    assert len(residual_scale_parameters(poolformer)) == 24  # layer_scale1/2 of 12 blocks
    assert residual_scale(timm.create_model("resnet18", pretrained=False)) == 1.0
