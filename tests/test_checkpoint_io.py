"""Checkpoints are replaced atomically: a crash while writing leaves the previous one intact."""

import pytest
import torch

from metamixer.lab.checkpoint_io import AtomicCheckpointIO
from metamixer.lab.loaders import EpochShuffle


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_epoch_shuffle_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    torch.rand(100)  # unrelated randomness in between
    assert list(b) == first and sorted(first) == list(range(50))
    b.set_epoch(3)
    assert list(b) != first
    assert list(EpochShuffle(5, shuffle=False)) == [0, 1, 2, 3, 4]
