"""Lightning glue shared by the modality packages: the CLI and crash-safe checkpoints.

This module imports lightning (the ``train`` extra); ``import metamixer.core`` does not import it,
so the core stays torch-only.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader, Dataset, Sampler

from . import results, runs
from .registry import import_modules


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed to disk, then renamed:
    a crash never leaves a half-written ``last.ckpt``.  Loading is ``weights_only`` (no pickled
    code runs)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class EpochShuffle(Sampler[int]):
    """Training sampler whose epoch is a pure function of (run seed, epoch, rank).

    The order is a permutation drawn from that seed, and when the epoch's iteration starts the
    global torch / numpy / ``random`` generators are re-seeded from it too, so the epoch's
    augmentation and dropout do not depend on what ran before.  A run killed mid-epoch and resumed
    from the last epoch-end checkpoint therefore repeats the uninterrupted run exactly.  Lightning
    calls ``set_epoch`` before every epoch (also under DDP, through its sampler wrapper).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None) -> None:
        self.size, self.shuffle, self.epoch = size, shuffle, 0
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        seed = (self.seed * 1_000_003 + self.epoch * 7919 + rank) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if not self.shuffle:
            return iter(range(self.size))
        return iter(
            torch.randperm(self.size, generator=torch.Generator().manual_seed(seed)).tolist()
        )


def split_loader(
    dataset: Dataset, batch_size: int, num_workers: int, *, train: bool,
    collate_fn: Callable | None = None,
) -> DataLoader:  # fmt: skip
    """A split's loader: training draws its order from ``EpochShuffle`` and drops the last partial
    batch; evaluation keeps the dataset's order and every sample."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=EpochShuffle(len(dataset)) if train else None,
        drop_last=train, num_workers=num_workers, persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )  # fmt: skip


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line entry point; a configuration or data error ends it with one ``error:``
    line naming the problem (the traceback only with ``METAMIXER_DEBUG=1``)."""
    try:
        main()
    except (ValueError, FileNotFoundError, ImportError, FloatingPointError, TimeoutError) as err:
        if os.environ.get("METAMIXER_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        sys.stderr.write(f"error: {message} (METAMIXER_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None


def launcher_world() -> tuple[int, int] | None:
    """``(processes per node, nodes)`` when started by a torchelastic-style launcher
    (``fabric run``, ``torchrun``), else ``None``."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    world = os.environ.get("WORLD_SIZE")
    if local is None or world is None:
        return None
    local_n, world_n = int(local), int(world)
    return local_n, max(1, world_n // max(1, local_n))


CPU_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "bf16", "64-true", "64")


def check_precision(precision: Any, accelerator: Any) -> None:
    """Refuse a precision the device cannot run, naming the choices (before any work)."""
    if precision is None:
        return
    precision = str(precision)
    on_gpu = torch.cuda.is_available() and str(accelerator) in ("auto", "gpu", "cuda", "None")
    if not on_gpu and precision not in CPU_PRECISIONS:
        raise ValueError(
            f"trainer.precision={precision} needs a GPU; on CPU use one of {', '.join(CPU_PRECISIONS)}"
        )
    if on_gpu and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"trainer.precision={precision}: this GPU has no bfloat16; use 16-mixed or 32-true"
        )


def check_checkpoint_task(path: str | None, model: LightningModule) -> None:
    """Refuse a checkpoint trained for another task (the registered architectures' task
    arguments: classes, channels, variables, window, scale) by name, before torch reports a size
    mismatch."""
    if not path or not Path(path).is_file():
        return
    from .architectures import ARCHITECTURES
    from .checkpoint import read_checkpoint

    saved = read_checkpoint(path).get("hyper_parameters") or {}
    for key in sorted({k for entry in ARCHITECTURES.values() for k in entry.task_args}):
        if key in saved and key in model.hparams and saved[key] != model.hparams[key]:
            raise ValueError(
                f"{path} was trained with {key}={saved[key]} but this data gives "
                f"{key}={model.hparams[key]}; use data that matches the checkpoint"
            )


def split_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--import MODULE`` / ``--import=MODULE`` options, and the modules."""
    rest, modules, it = [], [], iter(argv)
    for arg in it:
        if arg == "--import":
            value = next(it, None)
            if value is None:
                raise SystemExit("error: --import needs a module name, e.g. --import my_mixers")
            modules.append(value)
        elif arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, modules


class MetaMixerCLI(LightningCLI):
    """``LightningCLI`` with the project's defaults.

    * ``links``: ``(data attribute, model argument)`` pairs resolved after the data module is built,
      e.g. ``("data.num_classes", "model.num_classes")``, so a value is never written twice.
    * ``subclass_mode_data``: the data module is chosen by ``class_path`` (any subclass).
    * ``fit --test_after_fit true`` tests the best checkpoint of the run right after training.
    * every invocation writes into its own run folder (``metamixer.core.runs``:
      ``<default_root_dir>/<modality>/<--name or config stem>/<subcommand>-<time>``), printed at the
      start and the end; loggers and checkpoints go there, so re-running a saved config never
      touches the original run; ``fit --ckpt_path last`` continues the latest fit of the experiment;
    * the resolved config is saved as ``config.yaml`` in every run directory; seed 0 by default;
      checkpoints are written atomically and loaded weights-only (train loaders use
      ``EpochShuffle`` so that a resumed run repeats the interrupted one).
    * under ``fabric run`` / ``torchrun`` the Trainer joins the launcher's processes: ``devices`` and
      ``num_nodes`` left at "auto" / 1 follow the launcher, a contradicting value is an error.
    * ``--import MODULE`` (repeatable, anywhere on the command line) imports a module first, e.g.
      one that registers mixers, so that configs can select them by name.
    """

    def __init__(
        self,
        model_class: type[LightningModule],
        datamodule_class: type[LightningDataModule],
        *,
        links: Sequence[tuple[str, str]] = (),
        args: list[str] | None = None,
        run: bool = True,
        subclass_mode_data: bool = True,
    ) -> None:
        self.links = tuple(links)
        self.started = time.time()
        self.modality = model_class.__module__.split(".")[1]
        self.run_dir: Path | None = None
        if args is None:
            sys.argv[1:], modules = split_imports(sys.argv[1:])
            import_modules(modules)
        elif isinstance(args, list):
            args, modules = split_imports(args)
            import_modules(modules)
        super().__init__(
            model_class,
            datamodule_class,
            subclass_mode_data=subclass_mode_data,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": "runs"},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in self.links:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="experiment name of the run folder (default: the last --config file's stem)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the best checkpoint (or the last weights) once training ends",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        check_precision(config.trainer.get("precision"), config.trainer.get("accelerator"))
        self._join_launcher(config.trainer)
        self._place_run(config)

    @staticmethod
    def _join_launcher(trainer: Any) -> None:
        """Make the Trainer's process count agree with a torchelastic-style launcher's."""
        world = launcher_world()
        if world is None:
            return
        per_node, nodes = world
        devices = trainer.get("devices", "auto")
        if devices in ("auto", None, -1, "-1"):
            trainer.devices = per_node
        elif int(devices) != per_node:
            raise ValueError(
                f"the launcher started {per_node} processes per node but trainer.devices={devices}; "
                f"use --trainer.devices {per_node} (or leave it at auto) so that they join one run"
            )
        if trainer.get("num_nodes", 1) in (1, None):
            trainer.num_nodes = nodes
        if per_node * nodes > 1 and trainer.get("strategy", "auto") == "auto":
            trainer.strategy = "ddp"

    def _place_run(self, config: Any) -> None:
        """Choose this invocation's run folder and point every logger at it."""
        name = config.name = runs.experiment_name(
            config.get("name"), config.get("config"), "default"
        )
        experiment = Path(config.trainer.get("default_root_dir") or "runs") / self.modality / name
        subcommand = self.subcommand or "run"
        resume = None
        if config.get("ckpt_path") == "last":  # the experiment's latest fit, whichever folder
            last = runs.latest_checkpoint(experiment)
            if last is None:
                raise FileNotFoundError(
                    f"--ckpt_path last: no {experiment}/fit-*/checkpoints/last.ckpt; give the "
                    "checkpoint's path, or the --name / --config of the interrupted run"
                )
            config.ckpt_path = str(last)
            resume = last.parent.parent if subcommand == "fit" else None  # fit continues there
        self.run_dir = runs.shared_run_dir(
            experiment, lambda: resume or runs.new_run_dir(experiment, subcommand)
        )
        loggers = config.trainer.get("logger")
        if loggers in (None, True):  # Lightning's default logger, flat in the run folder
            loggers = config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace()
            )
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None:
                init.save_dir, init.name, init.version = str(self.run_dir), "", ""
        print(f"run folder: {self.run_dir}", flush=True)

    def _run_subcommand(self, subcommand: str) -> None:
        check_checkpoint_task(self._get(self.config, "ckpt_path"), self.model)
        os.environ[runs.ENV] = str(self.run_dir)  # processes the Trainer launches share the folder
        try:
            super()._run_subcommand(subcommand)
        finally:
            os.environ.pop(runs.ENV, None)
        if self.trainer.is_global_zero:
            print(f"run folder: {self.run_dir}", flush=True)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if not config.trainer.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        if self.run_dir is not None:
            kwargs.setdefault("default_root_dir", str(self.run_dir))
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        ckpt = "best" if self.trainer.checkpoint_callback is not None else None
        if ckpt == "best" and not self.trainer.checkpoint_callback.best_model_path:
            ckpt = None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        self.after_test()

    def after_test(self) -> None:
        """Write the test metrics as ``metrics.json`` and the run's record (``record.json``, see
        ``metamixer.core.results``) into the run folder."""
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective under DDP
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True))
        os.replace(tmp, folder / "metrics.json")
        config = self.config.get(self.subcommand)
        saved = folder / "config.yaml"
        results.write_record(
            folder, modality=self.modality, experiment=config.get("name") or "default",
            subcommand=self.subcommand, metrics=metrics,
            config_yaml=saved.read_text() if saved.is_file() else self.parser.dump(self.config),
            seed=config.get("seed_everything"), datamodule=self.datamodule, started=self.started,
        )  # fmt: skip
