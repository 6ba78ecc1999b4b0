"""The authors' checkpoint layout loads into our FFNet and gives their architecture's logits."""

from pathlib import Path

import pytest
import timm
import torch
from ffnet_official_reference import (
    layout_of,
    official_forward,
    random_checkpoint,
    read_tsv,
)

import metamixer.vision  # noqa: F401
from metamixer.vision import load_official_weights

TSV = Path(__file__).parent / "data" / "ffnet_1_official_keys.tsv"


def load_saved(arch, checkpoint, path):
    """``arch`` (in eval mode) with ``checkpoint`` loaded after a round trip through ``path``."""
    torch.save(checkpoint, path)
    return load_official_weights(timm.create_model(arch), path).eval()


def assert_gives_their_logits(model, sd, shape):
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official_forward(sd, x), atol=1e-4, rtol=1e-4)


def test_generated_layout_matches_the_released_ffnet_1_keys():
    assert layout_of("ffnet_1") == read_tsv(TSV)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_released_ffnet_1_layout_loads_and_matches_their_logits(tmp_path, wrapper):
    sd = random_checkpoint(read_tsv(TSV))
    stored = {f"module.{k}": v for k, v in sd.items()} if wrapper == "model" else sd
    checkpoint = {wrapper: stored, "epoch": 300} if wrapper else stored
    model = load_saved("ffnet_1", checkpoint, tmp_path / "ffnet_1.pth")
    assert_gives_their_logits(model, sd, (2, 3, 96, 96))


def test_layer_scale_and_large_channel_kernel_layout(tmp_path):
    """ffnet_test has layer-scale and 7×7 (+3×3) channel mixers, like FFNet-2…4."""
    sd = random_checkpoint(layout_of("ffnet_test"), seed=3)
    model = load_saved("ffnet_test", {"model": sd}, tmp_path / "ffnet_test.pth")
    assert_gives_their_logits(model, sd, (1, 3, 64, 64))


def test_timm_pretrained_from_a_local_file(tmp_path):
    sd = random_checkpoint(layout_of("ffnet_test"), seed=1)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": sd}, path)
    model = timm.create_model(
        "ffnet_test", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    assert_gives_their_logits(model, sd, (1, 3, 64, 64))


def test_checkpoint_of_another_variant_is_refused_with_both_layouts(tmp_path):
    path = tmp_path / "ffnet_test.pth"
    torch.save({"model": random_checkpoint(layout_of("ffnet_test"))}, path)
    with pytest.raises(ValueError, match=r"depths=\(1, 1, 2, 1\).*depths=\(2, 2, 8, 2\)"):
        load_official_weights(timm.create_model("ffnet_1"), path)


def test_missing_and_corrupt_files(tmp_path):
    model = timm.create_model("ffnet_test")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_official_weights(model, tmp_path / "absent.pth")
    bad = tmp_path / "truncated.pth"
    torch.save({"model": random_checkpoint(layout_of("ffnet_test"))}, bad)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read"):
        load_official_weights(model, bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.layer.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(ValueError, match="not in the authors' FFNet layout"):
        load_official_weights(model, foreign)
