import pytest
import torch
from forecaster_authors_reference import authors_forward, authors_parameter_count
from metamixer_testing import count_modules, randomize_batchnorm

from metamixer.core import MixerSettings, count_params, reparameterize_model
from metamixer.timeseries import FFNetForecaster


def settings(**changes) -> MixerSettings:
    """The authors' forecaster mixers with ``changes``."""
    authors = dict(token_kernels=51, channel_kernels=51, channel_small_kernels=5, mlp_ratio=2)
    return MixerSettings(**{**authors, **changes})


@pytest.mark.parametrize("m,ffn_ratio,horizon", [(7, 2, 96), (3, 8, 192), (1, 12, 24)])
def test_forward_matches_the_authors_layout(m, ffn_ratio, horizon):
    torch.manual_seed(0)
    model = randomize_batchnorm(
        FFNetForecaster(m, 96, horizon, mixers=settings(mlp_ratio=ffn_ratio))
    ).eval()
    x = torch.randn(4, 96, m) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors_forward(model, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("m,ffn_ratio,horizon", [(7, 2, 96), (21, 12, 720), (321, 12, 96)])
def test_parameter_count_matches_the_authors_model(m, ffn_ratio, horizon):
    model = FFNetForecaster(m, 96, horizon, mixers=settings(mlp_ratio=ffn_ratio))
    assert count_params(model) == authors_parameter_count(m, 64, ffn_ratio, 96, horizon)


def test_reparameterized_forecasts_are_unchanged():
    torch.manual_seed(0)
    model = randomize_batchnorm(FFNetForecaster(5, 96, 48, depth=2)).eval()
    x = torch.randn(3, 96, 5)
    with torch.no_grad():
        before = model(x)
        n = count_modules(model)
        reparameterize_model(model)
        after = model(x)
    assert count_modules(model) < n
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_every_parameter_gets_a_gradient():
    model = FFNetForecaster(3, 96, 24, mlp_drop=0.0)
    model(torch.randn(4, 96, 3)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_wrong_window_shape_names_the_expected_one():
    model = FFNetForecaster(7, 96, 24)
    with pytest.raises(ValueError, match=r"seq_len=96, variables=7"):
        model(torch.randn(2, 96, 5))


def test_lookback_erf_covers_the_window_for_large_kernels():
    from metamixer.timeseries.analyze import lookback_erf

    torch.manual_seed(0)
    x = torch.randn(8, 96, 2)
    wide = lookback_erf(FFNetForecaster(2, 96, 24, dim=8).eval(), x)
    assert wide.shape == (96,) and (wide > 0).all()


def features_reach(kernel: int) -> int:
    """Look-back steps that the features of the last patch depend on (the head, which mixes all
    patches, left out)."""
    torch.manual_seed(0)
    model = FFNetForecaster(
        2, 96, 24, dim=8, revin=False,
        mixers=settings(token_kernels=kernel, channel_kernels=kernel, channel_small_kernels=None),
    ).eval()  # fmt: skip
    x = torch.randn(1, 96, 2, requires_grad=True)
    model.forward_features(x)[..., -1].sum().backward()
    return int((x.grad.abs().sum(2)[0] > 0).sum())


def test_large_kernels_make_the_last_patch_see_the_whole_window():
    assert features_reach(51) == 96
    assert features_reach(3) < 20  # two 3-tap convs over stride-2 patches of 4
