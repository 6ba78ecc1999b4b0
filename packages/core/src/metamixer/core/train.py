"""Lightning glue shared by the modality packages: the CLI and crash-safe checkpoints.

This module imports lightning (the ``train`` extra); ``import metamixer.core`` does not import it,
so the core stays torch-only.
"""

from __future__ import annotations

import contextvars
import csv
import difflib
import json
import os
import random
import re
import shutil
import sys
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml
from jsonargparse import Namespace
from jsonargparse._typehints import ActionTypeHint
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, Sampler

from . import results, runs
from .atomic import atomic_path, write_text
from .checkpoint import read_checkpoint
from .registry import import_modules


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed to disk, then renamed:
    a crash never leaves a half-written ``last.ckpt``.  Loading is ``weights_only`` (no pickled
    code runs)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


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

    def __iter__(self) -> Iterator[Any]:
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


class KeepEarlierRows(Callback):
    """A resumed fit's ``metrics.csv`` starts with the rows the interrupted run logged before its
    checkpoint (the CLI adds it; Lightning's CSV logger would otherwise delete the file)."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        for logger in trainer.loggers:
            if not isinstance(logger, CSVLogger):
                continue
            with warnings.catch_warnings():  # "previous log files will be deleted": not these
                warnings.simplefilter("ignore")
                writer = logger.experiment
            keys = sorted({k for row in self.rows for k in row})
            with open(writer.metrics_file_path, "w", newline="") as f:
                table = csv.DictWriter(f, fieldnames=keys)
                table.writeheader()
                table.writerows(self.rows)
            writer.metrics_keys = keys
        self.rows = []  # once: ``test`` after the fit sets up again


def split_loader(
    dataset: Dataset, batch_size: int, num_workers: int, *, train: bool,
    collate_fn: Callable | None = None,
) -> DataLoader:  # fmt: skip
    """A split's loader: training is a ``ResumableLoader`` that draws its order from
    ``EpochShuffle`` and drops the last partial batch; evaluation keeps the dataset's order and
    every sample."""
    loader = ResumableLoader if train else DataLoader
    return loader(
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


_RESTORING: contextvars.ContextVar[bool] = contextvars.ContextVar("restoring", default=False)


@contextmanager
def restoring_checkpoint(active: bool = True) -> Iterator[None]:
    """While active, LightningModules are built to receive a checkpoint's weights: they skip the
    files that only start a fit (pretrained ``init_weights`` / ``init_backbone``, a teacher's
    weights), so a checkpoint is tested, predicted or resumed after those files moved."""
    token = _RESTORING.set(active)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def restoring_from_checkpoint() -> bool:
    """Whether the module being built is about to receive a checkpoint's weights."""
    return _RESTORING.get()


_QUOTES = ("'", '"')
_UNIONS = (typing.Union, types.UnionType)
_NESTED = re.compile(r"NestedArg\(key='([^']*)', val=(.*)\)$")
_SKIP = ("Does not validate against any of the", "Subtypes:", "Errors:", "Given value type:",
         "Problem with given class_path")  # fmt: skip


def _plain_type(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['a', 'b']`` -> ``one of a, b``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(
        r"typing\.Literal\[(.*)\]$",
        lambda m: "one of " + ", ".join(v.strip(" '\"") for v in m[1].split(",")),
        text,
    )


def condense_parser_error(
    message: str, mapping_keys: Callable[[str], list[str] | None] = lambda key: None
) -> str:
    """jsonargparse's error (nested "Does not validate against any of the Union subtypes" dumps) as
    one line: the option's full key, what was given and what it takes, e.g. ``trainer.max_epochs:
    got 'many'; expected int``.  ``mapping_keys(key)``: the keys a typed-dict option takes (named
    after an unknown one), or ``None``."""
    keys: list[str] = []
    leaves: list[str] = []
    expected: list[str] = []
    given, unknown_key = None, False
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        found = re.match(r'Parser key "([^"]+)":\s*(.*)$', line)
        if found:
            if keys[-1:] != [found[1]]:
                keys.append(found[1])
            line = found[2]
        if not line or line.startswith(_SKIP) or line == "Expected a <class 'NoneType'>":
            continue
        if line.startswith("Given value:"):
            value = line.removeprefix("Given value:").strip()
            nested = _NESTED.match(value)
            if nested:
                if keys[-1:] != [nested[1]] and not unknown_key:
                    keys.append(nested[1])
                value = nested[2]
            if given is None and not value.startswith(("Namespace(", "{")):
                given = value
            continue
        got = re.match(r"Expected a (.*?)(?:\. Got value: (.*))?$", line)
        if got:
            expected.append(_plain_type(got[1]))
            given = given if got[2] is None else got[2]
            continue
        unknown = re.match(r"Unexpected keys: \{(.*?)\}(?:\. Got value: .*)?$", line)
        if unknown:
            unknown_key, valid = True, mapping_keys(".".join(keys))
            line = f"unknown key {unknown[1]}" + (f"; valid: {', '.join(valid)}" if valid else "")
        leaves.append(line)
    parts = list(dict.fromkeys(leaves))
    got = "" if given is None else f"got {given if given.startswith(_QUOTES) else repr(given)}; "
    if any(e.startswith("dot import path") for e in expected):
        parts.append(f"no class {given!r}; --help lists the choices")
    elif expected and not unknown_key:
        choices = [c for e in expected if e.startswith("one of ") for c in e[7:].split(", ")]
        others = [e for e in expected if not e.startswith("one of ")]
        if choices:
            others.append("one of " + ", ".join(dict.fromkeys(choices)))
        parts.append(got + "expected " + " or ".join(dict.fromkeys(others)))
    text = "; ".join(parts) or " ".join(message.split())
    return f"{'.'.join(keys)}: {text}" if keys else text


def _typed_dict_keys(parser: Any, key: str) -> list[str] | None:
    """The keys of the ``TypedDict`` that option ``key`` of ``parser`` takes, if it takes one."""
    for action in getattr(parser, "_actions", ()):
        if action.dest == key:
            hint = getattr(action, "_typehint", None)
            for option in (hint, *typing.get_args(hint)):
                if typing.is_typeddict(option):
                    return list(typing.get_type_hints(option))
    return None


def _is_mapping_hint(hint: Any) -> bool:
    """Whether ``hint`` (or a member of its union) is a dict / mapping / ``TypedDict`` type."""
    options = (hint, *typing.get_args(hint)) if typing.get_origin(hint) in _UNIONS else (hint,)
    return any(
        typing.is_typeddict(o) or typing.get_origin(o) in (dict, Mapping) or o in (dict, Mapping)
        for o in options
    )


def _merged(base: Any, path: list[str], value: Any) -> dict[str, Any]:
    """A copy of mapping ``base`` (``{}`` if it is none) with ``value`` set at the key ``path``,
    every mapping on the way copied and kept."""
    merged = dict(base) if isinstance(base, Mapping) else {}
    merged[path[0]] = value if len(path) == 1 else _merged(merged.get(path[0]), path[1:], value)
    return merged


class MergingTypeHint(ActionTypeHint):
    """A typed option whose dict value takes ``--OPTION.a.b.c VALUE`` as an update of key
    ``a.b.c``: every other key, at every depth, keeps its value from the config files (jsonargparse
    merges one level only and replaces the dict below it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 4 and isinstance(args[3], str):
            parser, cfg, value, option = args
            base = self.get_option_string_base(option)
            path = option[len(base) + 1 :].removeprefix("init_args.").split(".") if base else []
            if len(path) > 1:
                previous = cfg.get(self.dest)
                first = previous.get(path[0]) if isinstance(previous, Mapping) else None
                leaf = yaml.safe_load(value) if isinstance(value, str) else value
                args = (parser, cfg, _merged(first, path[1:], leaf), f"{base}.{path[0]}")
        return super().__call__(*args, **kwargs)


class MetaMixerArgumentParser(LightningArgumentParser):
    """The CLI's parser: a configuration error is one ``error:`` line naming the option, the value
    and what it takes (jsonargparse's full message with ``METAMIXER_DEBUG=1``); an option is only
    recognised by its full name (argparse's prefix matching is off, so ``--trainer.max_epoch`` is
    an error, not ``max_epochs``); dict options merge nested updates (``MergingTypeHint``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        action = super().add_argument(*args, **kwargs)
        if type(action) is ActionTypeHint and _is_mapping_hint(action._typehint):
            action.__class__ = MergingTypeHint
        return action

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if os.environ.get("METAMIXER_DEBUG") or not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        line = condense_parser_error(message, lambda key: _typed_dict_keys(parser, key))
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        if unknown:
            options = [o for a in parser._actions for o in a.option_strings]
            close = difflib.get_close_matches(unknown[1], options, n=1)
            line += f"; did you mean {close[0]}?" if close else ""
        prog = parser.prog.replace(" [options]", "").split(" ")
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if prog[0] == "__main__.py" and spec is not None:  # python -m PACKAGE
            prog[0] = f"python -m {spec.name.removesuffix('.__main__')}"
        sys.stderr.write(f"error: {line} ({' '.join(prog)} --help lists the options)\n")
        raise SystemExit(2)


def _cause_in_union(err: BaseException) -> BaseException:
    """The error a class raised while jsonargparse built it, out of its "Does not validate against
    any of the Union subtypes" wrapper (named by the class), or ``err`` itself."""
    root = err
    while str(root).startswith(_SKIP[0]) and root.__cause__ is not None:
        root = root.__cause__
    if root is err:
        return err
    found = re.search(r"class_path='(?:[\w.]+\.)?(\w+)'", str(err))
    if found and type(root) in (ValueError, FileNotFoundError, TypeError):
        return type(root)(f"{found[1]}: {root}")
    return root


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
    * a configuration error is one ``error:`` line naming the option (``MetaMixerArgumentParser``);
      a data module's or model's own error while it is built reaches the user as itself, not inside
      jsonargparse's Union dump; a run folder that an error left empty is removed.
    * a relative path in a config file that does not exist from the current folder is looked up
      from the config file's folder and its parents up to the project root (``pyproject.toml`` or
      ``.git``), so experiment configs run from any folder; the resolved path is printed.
    * with ``--ckpt_path`` the model is built under ``restoring_checkpoint``: files that only start
      a fit (pretrained backbones, a teacher's weights) are not read again.
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
        self._earlier_rows: list[dict[str, str]] | None = None  # metrics.csv of a resumed fit
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
            parser_class=MetaMixerArgumentParser,
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
        # Lightning types limit_*_batches as float | int, so jsonargparse reads "1" as 1.0 (the whole
        # epoch) instead of one batch; read integers as int first
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
                    "limit_predict_batches", "val_check_interval"):  # fmt: skip
            action = parser._option_string_actions.get(f"--trainer.{key}")
            if action is not None and hasattr(action, "_typehint"):
                action._typehint = int | float | None
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
        self._resolve_config_paths(config)
        self._choose_checkpoint(config)
        self._place_run(config)

    def _choose_checkpoint(self, config: Any) -> None:
        """``validate`` / ``test`` / ``predict`` without ``--ckpt_path``: a saved run config
        (``RUN/config.yaml``) evaluates the run's best checkpoint, said so; any other config is
        refused unless the model starts from released weights (``model.init_weights``), because
        it would evaluate untrained weights and record them like a result."""
        if self.subcommand not in ("validate", "test", "predict") or config.get("ckpt_path"):
            return
        model = config.get("model")
        init = model.get("init_args", model) if isinstance(model, Namespace) else None
        if isinstance(init, Namespace) and init.get("init_weights"):
            return
        for given in reversed(config.get("config") or []):
            run = Path(str(getattr(given, "absolute", given))).parent
            best = runs.best_checkpoint(run)
            if best is not None:
                print(f"no --ckpt_path: {self.subcommand} uses the run's best checkpoint {best} "
                      "(--ckpt_path chooses another)")  # fmt: skip
                config.ckpt_path = str(best)
                return
        raise ValueError(
            f"{self.subcommand} without --ckpt_path would evaluate untrained weights; give "
            "--ckpt_path RUN/checkpoints/<file>.ckpt (or --config RUN/config.yaml of a fit, whose "
            "best checkpoint is then used)"
        )

    @staticmethod
    def _resolve_config_paths(config: Any) -> None:
        """Point a relative path of the data or model arguments that does not exist from the current
        folder at the one found from a config file's folder or one of its parents up to the project
        root (a relative path with a folder, e.g. ``data/timeseries``; bare names are left alone)."""
        bases: list[Path] = []
        for given in reversed(config.get("config") or []):
            folder = Path(str(getattr(given, "absolute", given))).parent
            chain = [folder, *folder.parents]
            top = next((i for i, p in enumerate(chain) if (p / "pyproject.toml").is_file()
                        or (p / ".git").exists()), 0)  # fmt: skip
            bases += chain[: top + 1]
        if not bases:
            return

        def resolve(key: str, value: Any) -> Any:
            if isinstance(value, list):
                return [resolve(key, v) for v in value]
            if (not isinstance(value, str) or "/" not in value.strip("/") or "://" in value
                    or Path(value).expanduser().is_absolute() or Path(value).exists()):  # fmt: skip
                return value
            for base in dict.fromkeys(bases):
                if (base / value).exists():
                    print(f"{key}: {value} is not in the current folder; using {base / value}")
                    return str(base / value)
            return value

        for section in ("data", "model"):
            node = config.get(section)
            if not isinstance(node, Namespace):
                continue
            args = node.get("init_args") if isinstance(node.get("init_args"), Namespace) else node
            for key, value in vars(args).items():
                setattr(args, key, resolve(f"{section}.{key}", value))

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
        self._existed = next(p for p in (experiment, *experiment.parents) if p.exists())
        self.run_dir = runs.shared_run_dir(
            experiment, lambda: resume or runs.new_run_dir(experiment, subcommand)
        )
        first = all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
        if resume is not None and first:
            step = int(read_checkpoint(config.ckpt_path).get("global_step", 0))
            kept, self._earlier_rows = runs.keep_before_resume(resume, step)
            print(f"resuming in {resume} from step {step}; its files as they were are kept in "
                  f"{kept}")  # fmt: skip
        loggers = config.trainer.get("logger")
        if loggers in (None, True):  # Lightning's default logger, flat in the run folder
            loggers = config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace()
            )
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None:
                init.save_dir, init.name, init.version = str(self.run_dir), "", ""

    def _discard_empty_run(self) -> None:
        """Remove this invocation's run folder, and the folders made for it, if an error stopped it
        before anything was written."""
        folder = self.run_dir
        if folder is None or not folder.is_dir() or any(not p.is_dir() for p in folder.rglob("*")):
            return
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if parent == self._existed or parent in self._existed.parents:
                break
            try:
                parent.rmdir()  # only while empty
            except OSError:
                break

    def instantiate_classes(self) -> None:
        """Build the classes (the model under ``restoring_checkpoint`` when a checkpoint will be
        loaded); an error of a class being built is raised as itself, named by the class."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        try:
            with restoring_checkpoint(bool(config.get("ckpt_path"))):
                super().instantiate_classes()
        except Exception as err:
            self._discard_empty_run()
            cause = _cause_in_union(err)
            if cause is err or os.environ.get("METAMIXER_DEBUG"):
                raise
            raise cause from None

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            check_checkpoint_task(self._get(self.config, "ckpt_path"), self.model)
        except Exception:
            self._discard_empty_run()
            raise
        if self.trainer.is_global_zero:
            print(f"run folder: {self.run_dir}", flush=True)
        os.environ[runs.ENV] = str(self.run_dir)  # processes the Trainer launches share the folder
        try:
            super()._run_subcommand(subcommand)
        except Exception:
            self._discard_empty_run()
            raise
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
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(RestoreLoaderState())
        if self._earlier_rows is not None:
            trainer.callbacks.append(KeepEarlierRows(self._earlier_rows))
        return trainer

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
        write_text(folder / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
        config = self.config.get(self.subcommand)
        saved = folder / "config.yaml"
        results.write_record(
            folder, modality=self.modality, experiment=config.get("name") or "default",
            subcommand=self.subcommand, metrics=metrics,
            config_yaml=saved.read_text() if saved.is_file() else self.parser.dump(self.config),
            seed=config.get("seed_everything"), datamodule=self.datamodule, started=self.started,
        )  # fmt: skip
