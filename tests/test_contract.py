"""One contract for every registered architecture of every modality (``metamixer.core.ARCHITECTURES``):
forward and backward, re-parameterization, the checkpoint round trip, a bf16 autocast training
step and ONNX export where the modality has it.  A newly registered variant is covered here."""

import importlib

import pytest
import torch
from metamixer_testing import randomize_batchnorm

from metamixer.core import ARCHITECTURES, build_network, reparameterize_model
from metamixer.core.architectures import network_from_checkpoint
from metamixer.core.checkpoint import export_onnx
from metamixer.lab.tasks import discover

#: every modality of the task table; importing its package registers its architectures
MODALITIES = sorted({task.modality for task in discover().values()})
for _modality in MODALITIES:
    importlib.import_module(f"metamixer.{_modality}")

#: Modalities whose networks export to ONNX (the sparse network runs on spconv's neighbour maps).
ONNX = ("vision", "superres", "timeseries")


def case(name: str):
    """Full-size dense-prediction networks (tens of millions of parameters at 512² recipes; their
    ``_test`` variants cover the same code) run with the slow tests."""
    dense = hasattr(ARCHITECTURES[name].cls, "forward_with_features")
    slow = dense and not name.endswith("_test")
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


#: the architectures with a tensor in, tensor out contract (an ``example``); the detectors (their
#: forward takes targets and returns losses or detections) have theirs in the vision tests
NAMES = sorted(name for name, entry in ARCHITECTURES.items() if entry.example is not None)
CASES = [case(name) for name in NAMES]


def build(name: str) -> tuple[torch.nn.Module, tuple]:
    """A small instance; stochastic depth off, so that every block takes part in each step."""
    torch.manual_seed(0)
    entry = ARCHITECTURES[name]
    no_drop = {"drop_path_rate": 0.0} if "drop_path_rate" in entry.parameters() else {}
    net = build_network(name, entry.test_task, no_drop)
    return net, entry.example(net)


def modality(name: str) -> str:
    return ARCHITECTURES[name].cls.__module__.split(".")[1]


def test_every_modality_registers_models():
    assert len(MODALITIES) >= 4
    assert {modality(n) for n in ARCHITECTURES} >= set(MODALITIES)


@pytest.mark.parametrize("name", CASES)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    net, example = build(name)
    out = net.train()(*example)
    assert torch.isfinite(out).all()
    # a random projection of the output: behind BatchNorm over a small batch, a symmetric loss such
    # as out².mean() gives a zero-initialised head's bias a gradient that is zero up to rounding
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", CASES)
def test_reparameterized_network_gives_the_same_outputs(name):
    net, example = build(name)
    net = randomize_batchnorm(net).eval()
    with torch.no_grad():
        before = net(*example)
        after = reparameterize_model(net)(*example)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_round_trip_rebuilds_the_network(name, tmp_path):
    net, example = build(name)
    net = randomize_batchnorm(net).eval()
    entry = ARCHITECTURES[name]
    checkpoint = {
        "hyper_parameters": {"arch": name, "arch_args": {"drop_path_rate": 0.0}, **entry.test_task}
        if "drop_path_rate" in entry.parameters()
        else {"arch": name, "arch_args": {}, **entry.test_task},
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
    }
    torch.save(checkpoint, tmp_path / "run.ckpt")
    rebuilt = network_from_checkpoint(tmp_path / "run.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*example), net(*example), atol=0, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_bf16_autocast_training_step(name):
    net, example = build(name)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.train()(*example)
    loss = out.float().square().mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("name", [case(n) for n in NAMES if modality(n) in ONNX])
def test_onnx_export_matches_pytorch(name, tmp_path):
    net, example = build(name)
    net = randomize_batchnorm(net).eval()
    with torch.no_grad():
        expected = net(*example)
    export_onnx(net, tmp_path / "net.onnx", example[0], example[0])
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": example[0].numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
