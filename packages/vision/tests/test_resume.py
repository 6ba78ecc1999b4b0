"""A run killed with SIGKILL mid-epoch and resumed with --ckpt_path last from a mid-epoch checkpoint
ends like an uninterrupted one; the resumable training loader behind it."""

import torch
from metamixer_testing import assert_same_weights, kill_and_resume, step_checkpoint
from torch.utils.data import Dataset

from metamixer.lab import loaders
from metamixer.lab.loaders import EpochShuffle, split_loader


def test_kill_and_resume_mid_epoch_matches_the_uninterrupted_run(fashion_root, tmp_path):
    args = [
        "--model.arch=ffnet_test", "--model.arch_args.drop_path_rate=0.1", "--model.warmup_epochs=0.5",
        "--model.ema_decay=0.9",
        "--data=metamixer.vision.classification.data.FashionMNISTDataModule", f"--data.root={fashion_root}",
        "--data.batch_size=16", "--data.val_size=16", "--trainer.max_epochs=3",
        "--trainer.accelerator=cpu", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true", *step_checkpoint(3),
    ]  # fmt: skip
    # 5 steps per epoch: last.ckpt is written at steps 3, 5 (epoch end) and 6, the kill is at 8;
    # the EMA weights must agree too (updated with the step, before a step checkpoint)
    ckpts = kill_and_resume("metamixer.vision", args, tmp_path, crash_step=8, steps_per_epoch=5)
    assert_same_weights(ckpts["uninterrupted"], ckpts["resumed"])


class Recording(Dataset):
    """Samples with random augmentation; remembers which were loaded."""

    def __init__(self) -> None:
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return 22

    def __getitem__(self, i: int) -> torch.Tensor:
        self.loaded.append(i)
        return torch.tensor([i, torch.randint(1000, ())])


def epoch(loader, number: int, state: dict | None = None) -> list[torch.Tensor]:
    if state is not None:
        loader.load_state_dict(state)
    loader.sampler.set_epoch(number)  # what Lightning does before the epoch
    return list(loader)


def test_a_restored_loader_skips_the_trained_batches_and_repeats_the_rest():
    data = Recording()
    whole = epoch(split_loader(data, 4, 0, train=True), 2)
    assert len(whole) == 5  # the partial batch is dropped
    first = split_loader(data, 4, 0, train=True)
    first.sampler.set_epoch(2)
    batches = iter(first)
    torch.testing.assert_close([next(batches), next(batches)], whole[:2])
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    data.loaded.clear()
    torch.rand(100)  # whatever ran before does not matter
    rest = epoch(split_loader(data, 4, 0, train=True), 2, state)
    torch.testing.assert_close(rest, whole[2:])  # same samples, same random draws
    assert data.loaded == torch.cat(whole[2:])[:, 0].tolist()  # skipped batches not loaded
    assert len(epoch(split_loader(data, 4, 0, train=True), 3, state)) == 5  # another epoch's


def test_ranks_share_the_permutation_that_lightnings_ddp_wrapper_shards(monkeypatch):
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders, "_rank", lambda rank=rank: rank)
        sampler = DistributedSamplerWrapper(EpochShuffle(10), num_replicas=2, rank=rank)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == list(range(10))
