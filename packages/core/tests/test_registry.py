"""The mixer and architecture registries: every registered mixer on every dense layout, and the
errors a user sees for unknown names, wrong lengths and activations a mixer cannot take."""

from dataclasses import replace

import pytest
import torch
from metamixer_testing import randomize_batchnorm
from torch import nn

from metamixer.core import (
    ARCHITECTURES,
    CHANNEL_MIXERS,
    TOKEN_MIXERS,
    DenseOps,
    MetaMixer,
    MixerContext,
    MixerSettings,
    build_network,
    network_args,
    register_architecture,
    register_token_mixer,
    reparameterize_model,
    stage_values,
)
from metamixer.core.registry import import_modules

LAYOUTS = {1: (2, 16, 11), 2: (2, 16, 6, 7), 3: (1, 16, 4, 5, 3)}
CONTEXT = dict(kernel_size=3, small_kernel=1, conv_norm=True, mlp_ratio=2.0)


def mixer_cases():
    for role, registry in (("token", TOKEN_MIXERS), ("channel", CHANNEL_MIXERS)):
        for name in registry.names():
            for ndim in LAYOUTS:
                yield pytest.param(registry, name, ndim, id=f"{role}-{name}-{ndim}d")


@pytest.mark.parametrize("registry,name,ndim", list(mixer_cases()))
def test_every_registered_mixer_runs_backwards_and_folds_on_every_dense_layout(
    registry, name, ndim
):
    torch.manual_seed(0)
    mixer = registry.build(name, MixerContext(16, DenseOps(ndim), **CONTEXT))
    x = torch.randn(LAYOUTS[ndim], requires_grad=True)
    out = mixer(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    if any(True for _ in mixer.parameters()):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mixer.parameters())
    mixer = randomize_batchnorm(mixer).eval()
    with torch.no_grad():
        before = mixer(x)
        torch.testing.assert_close(reparameterize_model(mixer)(x), before, atol=1e-5, rtol=1e-5)


def test_context_settings_reach_the_modules():
    c = MixerContext(8, DenseOps(2), kernel_size=7, value_kernel_size=5, small_kernel=3)
    mixer = TOKEN_MIXERS.build("ffnified", c)
    assert mixer.key.kernel_size == 7 and mixer.key.small.kernel_size == 3
    assert mixer.value.kernel_size == 5
    channel = CHANNEL_MIXERS.build("convnext", replace(c, mlp_ratio=3.0, act="relu"))
    assert channel.key.out_channels == 24 and isinstance(channel.act, nn.ReLU)
    attention = TOKEN_MIXERS.build("attention", replace(c, dim=64, num_heads=4))
    assert attention.mixer.key.num_heads == 4


def test_unknown_mixer_names_the_place_and_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown token mixer 'conv' at stage 2; registered: "
                       r"attention, ffnified, identity, pooling"):  # fmt: skip
        MixerSettings(token_mixers=["ffnified", "conv", "ffnified", "ffnified"]).stages(4)


def test_activation_a_mixer_cannot_take_is_refused():
    with pytest.raises(
        ValueError, match=r"'pooling' at stage 3 cannot take .* 'softmax'; valid: identity"
    ):
        MixerSettings(token_mixers=["ffnified"] * 2 + ["pooling"] * 2,
                      token_acts=[None, None, "softmax", None]).stages(4)  # fmt: skip
    with pytest.raises(ValueError, match=r"'gleu'; valid: gelu, identity, relu"):
        MixerSettings(channel_acts=["gelu", "gleu"]).stages(2)


def test_per_stage_lists_are_checked_and_spread_over_groups():
    assert stage_values(3, 4, "k") == [3, 3, 3, 3]
    assert stage_values(["a", "b"], 4, "m", groups=True) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match=r"token_mixers has 3 entries but the network has 4"):
        stage_values(["a"] * 3, 4, "token_mixers")
    with pytest.raises(ValueError, match=r"has 3 entries .* \(or a divisor of 4\)"):
        stage_values(["a"] * 3, 4, "x", groups=True)


def test_a_user_mixer_registers_like_a_built_in():
    @register_token_mixer("test_gate", acts=("sigmoid", "tanh"))
    def gate(c: MixerContext) -> MetaMixer:
        return MetaMixer(
            c.dim, query=c.ops.query(c.dim), key=c.ops.depthwise(c.dim, c.kernel_size),
            act=c.activation("sigmoid"), value=None, act_axis=c.ops.channel_axis,
        )  # fmt: skip

    try:
        stages = MixerSettings(token_mixers=["ffnified", "test_gate"], token_acts=[None, "tanh"],
                               token_kernels=3).stages(2)  # fmt: skip
        mixer = stages[1].token(8, DenseOps(2))
        assert isinstance(mixer.act, nn.Tanh)
        assert mixer(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)
    finally:
        TOKEN_MIXERS._entries.pop("test_gate")


def test_a_failing_user_module_is_named():
    with pytest.raises(ImportError, match=r"cannot import 'no_such_module_x' .* --import"):
        import_modules(["no_such_module_x"])


class Tiny(nn.Module):
    def __init__(self, classes: int, width: int = 4, depth: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
        self.head = nn.Linear(width, classes)


def test_architectures_spell_out_every_argument_and_overrides_are_checked():
    with pytest.raises(ValueError, match=r"not spelled out \['depth'\]"):
        register_architecture("tiny_bad", Tiny, {"width": 4}, task_args=("classes",))
    register_architecture("tiny_ok", Tiny, {"width": 4, "depth": 1}, task_args=("classes",))
    try:
        net = build_network("tiny_ok", {"classes": 3}, {"depth": 2})
        assert len(net.layers) == 2 and net.head.out_features == 3
        with pytest.raises(ValueError, match=r"tiny_ok has no argument 'widht'; valid: classes"):
            network_args("tiny_ok", {"classes": 3}, {"widht": 8})
        with pytest.raises(ValueError, match=r"classes of tiny_ok come from the data"):
            network_args("tiny_ok", {"classes": 3}, {"classes": 5})
        with pytest.raises(
            ValueError, match=r"unknown architecture 'tiny_no'; registered: .*tiny_ok"
        ):
            build_network("tiny_no")
    finally:
        ARCHITECTURES.pop("tiny_ok")
