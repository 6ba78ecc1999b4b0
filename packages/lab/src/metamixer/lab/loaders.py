"""Training loaders that resume: an epoch's order and every batch's random state are pure
functions of (run seed, epoch, batch), so a run killed mid-epoch and resumed repeats the
uninterrupted one."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset, Sampler


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _reseed(seed: int) -> None:
    """Re-seed the global torch / numpy / ``random`` generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochShuffle(Sampler[int]):
    """Training sampler whose epoch is a pure function of (run seed, epoch).

    The order is a permutation drawn from (seed, epoch), the same on every rank (Lightning's DDP
    wrapper shards it); when the epoch's iteration starts, the global torch / numpy / ``random``
    generators are re-seeded from (seed, epoch, rank), so that a run resumed from an epoch-end
    checkpoint repeats the uninterrupted one.  ``ResumableLoader`` re-seeds per batch on top of this,
    for mid-epoch checkpoints.  Lightning calls ``set_epoch`` before every epoch.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None) -> None:
        self.size, self.shuffle, self.epoch = size, shuffle, 0
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        seed = (self.seed * 1_000_003 + self.epoch * 7919) % 2**32
        _reseed((seed + _rank()) % 2**32)
        if not self.shuffle:
            return iter(range(self.size))
        return iter(
            torch.randperm(self.size, generator=torch.Generator().manual_seed(seed)).tolist()
        )


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of the global generators while training batch ``batch`` of ``epoch`` is loaded."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, batch, rank]).generate_state(1)[0])


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` that Lightning resumes mid-epoch.

    It is stateful: checkpoints record its epoch and the number of batches it has handed to
    training (Lightning fetches a sized loader's batch only when the step needs it, so that is the
    number trained); restored from one, it skips those batches of the same permutation without
    loading them.  The global generators are re-seeded with ``batch_seed`` just before each batch's
    indices are drawn, so with ``num_workers=0`` a batch's augmentation and its step's dropout do not
    depend on what ran before, and a resumed run repeats the uninterrupted one exactly (worker
    processes keep their own generators).  Nothing is drawn before the first batch is requested,
    i.e. after Lightning's ``set_epoch``.
    """

    _resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint
    _skip = 0  # batches the next pass skips
    _served = 0  # batches handed out in the current pass

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = int(state["epoch"]), int(state["batches"])

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over the base iterator
        return self._serve()  # a generator: runs from the first ``next``

    def _serve(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        epoch = int(getattr(self.sampler, "epoch", 0))
        self._skip = self._served = resume[1] if resume and resume[0] == epoch else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    @property
    def _index_sampler(self) -> Any:  # what DataLoader's iterators draw index batches from
        return _SeededBatches(self, super()._index_sampler)


class _SeededBatches:
    """``loader``'s index batches for one pass: the first ``loader._skip`` are dropped, and the
    global generators are re-seeded before each of the others is handed out."""

    def __init__(self, loader: ResumableLoader, batches: Any) -> None:
        self.loader, self.batches = loader, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        skip, self.loader._skip = self.loader._skip, 0
        sampler = self.loader.sampler
        seed = int(getattr(sampler, "seed", os.environ.get("PL_GLOBAL_SEED", 0)))
        epoch, rank = int(getattr(sampler, "epoch", 0)), _rank()
        for index, batch in enumerate(self.batches):
            if index >= skip:
                _reseed(batch_seed(seed, epoch, index, rank))
                yield batch


class RestoreLoaderState(Callback):
    """Hands a mid-epoch checkpoint's loader state to the training loader (the CLI adds it).

    Works around Lightning issue #20550: ``trainer.estimated_stepping_batches`` (read by
    ``configure_optimizers``) builds the training loader before the checkpoint is restored, and
    the fit loop then never loads the saved state into it; without this a resumed run would start
    the interrupted epoch from its first batch.  A no-op unless restarting mid-epoch."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.fit_loop._load_combined_loader_states()


class LoadersBySplit:
    """A data module's ``train`` / ``val`` / ``test_dataloader``: its ``_loader(split)`` of each
    split (a base listed before ``LightningDataModule``)."""

    #: the split that ``test`` reads (``"val"`` where the validation split is also the test set)
    test_split = "test"

    def _loader(self, split: str) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split)


class TrainValLoaders(LoadersBySplit):
    """``LoadersBySplit`` of a data module whose ``setup`` reads ``train_set`` and ``val_set`` (the
    validation set is also the test set); ``_batching()`` gives the batch size, the number of
    workers and the collate function."""

    test_split = "val"
    #: what ``setup`` reads (named when a loader is asked for before it)
    reads = "the data"
    train_set: Sized | None
    val_set: Sized | None

    def _batching(self) -> tuple[int, int, Callable | None]:
        raise NotImplementedError

    def _loader(self, split: str) -> DataLoader:
        dataset = self.train_set if split == "train" else self.val_set
        if dataset is None:
            raise RuntimeError(f"{self.reads} are read by setup(); call it first")
        batch_size, num_workers, collate_fn = self._batching()
        return split_loader(
            dataset, batch_size, num_workers, train=split == "train", collate_fn=collate_fn
        )


def split_loader(
    dataset: Sized, batch_size: int, num_workers: int, *, train: bool,
    collate_fn: Callable | None = None,
) -> DataLoader:  # fmt: skip
    """A split's loader: training is a ``ResumableLoader`` that draws its order from
    ``EpochShuffle`` and drops the last partial batch; evaluation keeps the dataset's order and
    every sample."""
    loader = ResumableLoader if train else DataLoader
    return loader(
        cast(Dataset, dataset), batch_size=batch_size, sampler=EpochShuffle(len(dataset)) if train else None,
        drop_last=train, num_workers=num_workers, persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )  # fmt: skip
