"""Checkpoints from strangers: a pickle that would run code is refused, and nothing runs."""

import argparse
import pickle
from pathlib import Path

import pytest
import torch


class Exploit:
    """Unpickling this calls ``Path.touch`` on a marker file (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Exploit(marker)}, path)
    with open(tmp_path / "check.pkl", "wb") as f:  # the payload really is live when unpickled
        pickle.dump(Exploit(tmp_path / "sanity"), f)
    with open(tmp_path / "check.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "sanity").exists()
    return path, marker


def loaders():
    import timm

    import metamixer.vision  # noqa: F401
    from metamixer.lab.checkpoint_io import AtomicCheckpointIO
    from metamixer.superres import FFNetSR, load_sr_weights
    from metamixer.superres.tools import load_model
    from metamixer.vision import load_official_weights
    from metamixer.vision.backbone import classifier_from_checkpoint
    from metamixer.vision.classification.lit import load_weights_file

    return {
        "vision.load_official_weights": lambda p: load_official_weights(
            timm.create_model("ffnet_test"), p
        ),
        "vision.load_weights_file": load_weights_file,
        "vision.classifier_from_checkpoint": classifier_from_checkpoint,
        "superres.load_sr_weights": lambda p: load_sr_weights(FFNetSR(dim=8, depth=1), p),
        "superres.tools.load_model": lambda p: load_model(str(p), "ffnet_sr_light", 2),
        "lightning resume (AtomicCheckpointIO)": AtomicCheckpointIO().load_checkpoint,
    }


@pytest.mark.parametrize("name", list(loaders()))
def test_malicious_pickle_is_refused_and_nothing_runs(malicious, name):
    path, marker = malicious
    with pytest.raises((ValueError, pickle.UnpicklingError)) as err:
        loaders()[name](path)
    assert "weights" in str(err.value).lower() or "unsupported global" in str(err.value).lower()
    assert not marker.exists(), f"{name} executed code from the checkpoint"


class NotANamespace(argparse.Namespace):
    """A subclass is another global: still refused."""


def test_a_file_written_by_timms_checkpoint_saver_loads_and_other_classes_stay_refused(tmp_path):
    import timm

    import metamixer.vision  # noqa: F401
    from metamixer.core.checkpoint import read_checkpoint
    from metamixer.vision import load_official_weights

    model = timm.create_model("ffnet_test")
    saved = {  # the keys timm.utils.CheckpointSaver writes (the authors' train.py uses it)
        "epoch": 299, "arch": "ffnet_test", "state_dict": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []}, "version": 2,
        "args": argparse.Namespace(model="ffnet_test", lr=4e-3, epochs=300), "metric": 71.2,
    }  # fmt: skip
    torch.save(saved, tmp_path / "checkpoint-299.pth.tar")
    assert read_checkpoint(tmp_path / "checkpoint-299.pth.tar")["args"].lr == 4e-3
    fresh = load_official_weights(
        timm.create_model("ffnet_test"), tmp_path / "checkpoint-299.pth.tar"
    )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    torch.save({**saved, "args": NotANamespace(lr=1.0)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="weights-only"):
        read_checkpoint(tmp_path / "other.pth")
