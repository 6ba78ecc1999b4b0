"""Deployment passes: each keeps the outputs, each can be left out, none applies behind the user's
back; a pass or recipe that does not fit the model says so and leaves it unchanged."""

import copy

import pytest
import torch
from core_models import build_core_model
from metamixer_testing import randomize_batchnorm
from torch import nn

from metamixer.core import (
    PASSES,
    RECIPES,
    DenseOps,
    MetaMixer,
    apply_passes,
    convnext_mixer,
    cpu_kernels,
    deploy,
    ffn,
    self_attention,
)
from metamixer.core.cpu_kernels import InplaceGELU, InterleavedDepthwise, SlicedMetaMixer


def model_and_input(ndim: int = 2):
    torch.manual_seed(0)
    model = randomize_batchnorm(build_core_model(ndim, kernel=7, small=3)).eval()
    return model, torch.randn((2, 3) + (16,) * ndim)


def test_the_plain_mixer_never_overwrites_what_a_hook_kept():
    mixer = ffn(8, ops=DenseOps(2)).eval()
    kept = []
    mixer.key.register_forward_hook(lambda m, i, o: kept.append(o))
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        mixer(x)
    torch.testing.assert_close(kept[0], mixer.key(x))  # the key's output, not GELU of it
    assert type(mixer.act) is nn.GELU


#: the CPU passes with nothing to rewrite in the core test network of that dimension
NOT_APPLICABLE = {
    1: {"channels_last"},  # no 4D tensors
    2: {"banded_depthwise_1d"},
}


@pytest.mark.parametrize("name", RECIPES["cpu"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_every_cpu_pass_alone_keeps_the_outputs(name, ndim):
    model, x = model_and_input(ndim)
    with torch.no_grad():
        expected = model(x)
        changed = PASSES[name](model)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)
    assert (changed > 0) == (name not in NOT_APPLICABLE[ndim])


@pytest.mark.parametrize("skip", [(), ("interleave_multiplier_convs",), tuple(RECIPES["cpu"][1:])])
def test_cpu_recipe_with_and_without_passes_keeps_the_outputs(skip):
    model, x = model_and_input(2)
    with torch.no_grad():
        expected = model(x)
        deploy(model, "cpu", skip=skip)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)
    kinds = {type(m) for m in model.modules()}
    assert (InterleavedDepthwise in kinds) == ("interleave_multiplier_convs" not in skip)
    assert (InplaceGELU in kinds) == ("inplace_activations" not in skip)
    assert (SlicedMetaMixer in kinds) == ("slice_positionwise" not in skip)


def test_portable_recipe_only_folds():
    model, _ = model_and_input(2)
    deploy(model, "portable")
    kinds = {type(m) for m in model.modules()}
    assert not kinds & {InterleavedDepthwise, InplaceGELU, SlicedMetaMixer}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_training_passes_keep_parameters_outputs_and_gradients():
    torch.manual_seed(0)
    ops = DenseOps(1)
    model = nn.Sequential(
        ops.depthwise(6, 51), nn.Conv1d(6, 12, 1, groups=3), nn.GELU(), nn.Conv1d(12, 6, 1)
    )
    reference = copy.deepcopy(model)
    deploy(model, "cpu_training")
    assert model.training and [type(m).__name__ for m in model] == [
        "BandedDepthwiseConv1d", "Conv1d", "GELU", "Conv1d",
    ]  # fmt: skip
    assert list(model.state_dict()) == list(reference.state_dict())
    x = torch.randn(4, 6, 48)
    out, ref = model(x), reference(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)


# --- in-place activations ---------------------------------------------------------------------


def test_inplace_gelu_overwrites_the_key_output_only_at_inference():
    torch.manual_seed(0)
    mixer = apply_passes(ffn(8, ops=DenseOps(2)).eval(), ["inplace_activations"])
    assert type(mixer.act) is InplaceGELU
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y = mixer(x)
    torch.testing.assert_close(y, mixer.value(nn.functional.gelu(mixer.key(x))))
    x.requires_grad_(True)
    mixer(x).sum().backward()  # out of place: autograd still has GELU's input
    expected = torch.autograd.grad(mixer.value(nn.functional.gelu(mixer.key(x))).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_inplace_activations_leave_inputs_that_others_read():
    identity_key = MetaMixer(4, query=None, key=nn.Identity(), act="gelu", value=None)
    hooked = ffn(8, ops=DenseOps(2))
    hooked.key.register_forward_hook(lambda m, i, o: None)
    dropout_last = nn.Sequential(nn.Identity(), nn.GELU())
    for model in (identity_key, hooked, dropout_last):
        with pytest.warns(UserWarning, match="nothing to rewrite"):
            apply_passes(model.eval(), ["inplace_activations"])
        assert not any(isinstance(m, InplaceGELU) for m in model.modules())
    x = torch.randn(2, 4)
    before = x.clone()
    with torch.no_grad():
        identity_key(x)
    torch.testing.assert_close(x, before)


# --- sliced position-wise mixers --------------------------------------------------------------


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "SLICE_ELEMENTS", 1000)


def _key_inputs(mixer: MetaMixer) -> list[tuple]:
    shapes = []
    mixer.key.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    return shapes


@pytest.mark.parametrize("channels_last", [False, True])
def test_sliced_inference_equals_whole(small_slices, channels_last):
    torch.manual_seed(0)
    mixer = convnext_mixer(8, ops=DenseOps(2), kernel_size=3).eval()
    x = torch.randn(2, 8, 13, 11)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        mixer = mixer.to(memory_format=torch.channels_last)
    with torch.no_grad():
        whole = mixer(x)
        apply_passes(mixer, ["slice_positionwise"])
        calls = _key_inputs(mixer)
        sliced = mixer(x)
    assert len(calls) == 3 and sum(s[2] for s in calls) == 13  # 2·8·13·11 elements / 1000
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)
    if channels_last:
        assert sliced.is_contiguous(memory_format=torch.channels_last)


def test_training_and_autograd_never_slice(small_slices):
    mixer = apply_passes(ffn(8, ops=DenseOps(2)), ["slice_positionwise"])
    calls = _key_inputs(mixer)
    x = torch.randn(2, 8, 13, 11)
    mixer(x).sum().backward()  # training mode
    mixer.eval()
    mixer(x)  # gradients on
    assert len(calls) == 2


def test_token_mixers_and_attention_are_never_sliced():
    model = nn.Sequential(self_attention(8, num_heads=2))
    with pytest.warns(UserWarning, match="nothing to rewrite"):
        apply_passes(model, ["slice_positionwise"])


# --- passes and recipes that do not fit -------------------------------------------------------


def test_interleaving_a_model_without_multiplier_convs_warns_and_changes_nothing():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8))
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=r"interleave_multiplier_convs.*unchanged"):
        apply_passes(model, ["interleave_multiplier_convs"])
    assert model.state_dict().keys() == before.keys()


def test_a_gpu_recipe_on_a_cpu_model_is_refused_before_any_change():
    model, _ = model_and_input(2)
    model.train()
    with pytest.raises(ValueError, match=r"target 'cuda' runs on cuda.*parameters are on cpu"):
        deploy(model, "cuda")
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_unknown_names_are_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"unknown deployment target 'gpu'.*cpu"):
        deploy(model, "gpu")
    with pytest.raises(ValueError, match=r"unknown deployment passes \['fold'\]"):
        apply_passes(model, ["fold"])
    with pytest.raises(ValueError, match="not in the 'portable' recipe"):
        deploy(model, "portable", skip=["channels_last"])


def test_a_pass_registered_from_outside_runs_by_name_and_a_taken_name_is_refused():
    from metamixer.core import PASSES, register_pass

    def gelu_to_tanh(model: nn.Module) -> int:
        changed = 0
        for module in model.modules():
            if type(module) is nn.GELU and module.approximate == "none":
                module.approximate = "tanh"
                changed += 1
        return changed

    try:
        register_pass("gelu_tanh", gelu_to_tanh)
        net = nn.Sequential(nn.Linear(4, 4), nn.GELU()).eval()
        x = torch.randn(3, 4)
        before = net(x)
        apply_passes(net, ["gelu_tanh"])
        assert net[1].approximate == "tanh"
        torch.testing.assert_close(net(x), before, atol=1e-3, rtol=0)
        with pytest.raises(ValueError, match="pass 'gelu_tanh' is registered already"):
            register_pass("gelu_tanh", gelu_to_tanh)
        with pytest.raises(ValueError, match="pass 'reparameterize' is registered already"):
            register_pass("reparameterize", gelu_to_tanh)
    finally:
        PASSES.pop("gelu_tanh", None)
