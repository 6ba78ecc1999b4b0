from pathlib import Path

import pytest
import torch
from metamixer_testing import randomize_batchnorm
from sr_authors_reference import authors_forward, random_state, read_tsv

from metamixer.core import build_network, count_params, reparameterize_model
from metamixer.superres import FFNetSR, load_sr_weights

TSV = Path(__file__).parent / "data" / "ffnetsr_light_x2_official_keys.tsv"


@pytest.mark.parametrize(
    "variant,expected", [("ffnet_sr", 2_381_580), ("ffnet_sr_light", 1_789_452)]
)
def test_parameter_counts_at_x2(variant, expected):
    assert count_params(build_network(variant, {"scale": 2})) == expected


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_larger_and_skips_through(scale):
    model = FFNetSR(scale=scale, dim=8, depth=1).eval()
    torch.nn.init.zeros_(model.conv_bef_up.weight)
    torch.nn.init.zeros_(model.conv_bef_up.bias)
    x = torch.rand(1, 3, 10, 13)
    y = model(x)
    assert y.shape == (1, 3, 10 * scale, 13 * scale)
    # with a zero body the long skip makes nearest-neighbour upscaling
    torch.testing.assert_close(y, x.repeat_interleave(scale, 2).repeat_interleave(scale, 3))


def test_basicsr_builds_it_from_the_authors_option_dict():
    from basicsr.archs import build_network

    import metamixer.superres  # noqa: F401

    net = build_network(
        {"type": "FFNetSR", "dim": 96, "depth": 36, "expansion_ratio": 2, "scale": 2, "norm": None}
    )
    assert isinstance(net, FFNetSR) and count_params(net) == 1_789_452


@pytest.mark.parametrize("wrapper", ["params_ema", "params"])
def test_released_light_x2_layout_loads_and_matches_their_forward(tmp_path, wrapper):
    shapes = read_tsv(TSV)
    state = random_state(shapes)
    path = tmp_path / "ffnetsr_light_x2.pth"
    torch.save({wrapper: state}, path)
    model = load_sr_weights(build_network("ffnet_sr_light", {"scale": 2}), path).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors_forward(state, x, 2), atol=1e-4, rtol=1e-4)


def test_checkpoint_of_another_depth_or_scale_is_refused(tmp_path):
    state = random_state(read_tsv(TSV))
    path = tmp_path / "light.pth"
    torch.save({"params": state}, path)
    with pytest.raises(ValueError, match="depth 36"):
        load_sr_weights(build_network("ffnet_sr", {"scale": 2}), path)
    with pytest.raises(ValueError, match="other shapes"):
        load_sr_weights(build_network("ffnet_sr_light", {"scale": 3}), path)


@pytest.mark.parametrize("norm", [None, "LN", "BN"])
def test_norm_variants_train_and_fold(norm):
    torch.manual_seed(0)
    model = FFNetSR(scale=2, dim=8, depth=2, norm=norm)
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model = randomize_batchnorm(model).eval()  # fresh BNs are identities: a wrong fold would pass
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        before = model(x)
        after = reparameterize_model(model)(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_grey_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="RGB"):
        FFNetSR(dim=8, depth=1)(torch.rand(1, 1, 8, 8))
