"""FFNet-1…4: timm registration, the paper's sizes, features, re-parameterization."""

import pytest
import timm
import torch
from metamixer_testing import count_modules, randomize_batchnorm

import metamixer.vision  # noqa: F401  (registers the models)
from metamixer.core import count_macs, count_params, reparameterize_model

# Paper table (params train / fused in M, fused GMACs at the listed resolution).
PAPER = {
    "ffnet_1": (13.78, 13.66, 2.98, 256),
    "ffnet_2": (27.21, 26.91, 6.00, 256),
    "ffnet_3": (48.82, 48.33, 10.15, 256),
    "ffnet_4": (79.87, 79.20, 43.12, 384),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_sizes_match_the_paper(name):
    params, fused_params, gmacs, res = PAPER[name]
    model = timm.create_model(name).eval()
    assert count_params(model) / 1e6 == pytest.approx(params, rel=0.005)
    reparameterize_model(model)
    assert count_params(model) / 1e6 == pytest.approx(fused_params, rel=0.005)
    assert count_macs(model, torch.randn(1, 3, res, res)) / 1e9 == pytest.approx(gmacs, rel=0.02)
    assert model.pretrained_cfg["input_size"] == (3, res, res)


def test_create_model_with_timm_kwargs():
    model = timm.create_model("ffnet_2", num_classes=10, drop_path_rate=0.1)
    assert model.head.out_features == 10
    rates = [m.drop_path.p for m in model.modules() if hasattr(m, "drop_path")]
    assert max(rates) == pytest.approx(0.1) and min(rates) == 0.0
    assert model.get_classifier() is model.head


def test_default_drop_path_follows_the_table():
    model = timm.create_model("ffnet_3")
    assert max(m.drop_path.p for m in model.modules() if hasattr(m, "drop_path")) == pytest.approx(
        0.35
    )


def test_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = timm.create_model("ffnet_test", num_classes=5)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_features_only_gives_four_strided_maps():
    model = timm.create_model("ffnet_test", features_only=True)
    feats = model(torch.randn(1, 3, 128, 96))
    assert [f.shape[1] for f in feats] == model.feature_info.channels() == [16, 32, 64, 128]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 24), (16, 12), (8, 6), (4, 3)]


def test_forward_intermediates_matches_forward_features():
    model = timm.create_model("ffnet_test").eval()
    x = torch.randn(1, 3, 64, 64)
    final, inter = model.forward_intermediates(x)
    assert len(inter) == 4
    torch.testing.assert_close(final, model.forward_features(x))
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    torch.testing.assert_close(last_two[-1], inter[-1])


@pytest.mark.parametrize("name,res", [("ffnet_test", 64), ("ffnet_1", 96), ("ffnet_3", 64)])
def test_reparameterized_model_gives_the_same_logits(name, res):
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model(name, num_classes=7)).eval()
    # Non-trivial layer-scale so the folded branches matter (ffnet_3 starts at 1e-6).
    for module in model.modules():
        if type(module).__name__ == "LayerScale":
            module.weight.data.uniform_(0.5, 1.0)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        before = model(x)
        n = count_modules(model)
        reparameterize_model(model)
        after = model(x)
    assert count_modules(model, torch.nn.BatchNorm2d) == 1  # only the final norm before the pool
    assert count_modules(model) < n
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "shape,match",
    [((2, 1, 64, 64), "in_chans"), ((2, 3, 16, 16), "too small"), ((3, 64, 64), "shape")],
)
def test_bad_input_names_the_problem(shape, match):
    model = timm.create_model("ffnet_test")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(shape))


def test_per_stage_arguments_are_checked():
    with pytest.raises(ValueError, match="token_kernels has 2 entries but the network has 4"):
        timm.create_model("ffnet_test", token_kernels=(3, 7))
    with pytest.raises(TypeError):
        timm.create_model("ffnet_test", token_kernel=3)  # misspelled keyword
