"""The Lightning command line of every task (``MetaMixerCLI``) and its error handling."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse._util import import_object
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from metamixer.core.atomic import write_text
from metamixer.core.checkpoint import read_checkpoint
from metamixer.core.registry import import_modules

from . import results, runs
from .checkpoint_io import AtomicCheckpointIO
from .launcher import check_precision, join_launcher
from .loaders import RestoreLoaderState
from .parser import MetaMixerArgumentParser, cause_in_union
from .runs import KeepEarlierRows, RunProvenance
from .tasks import Task


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


def check_checkpoint_task(path: str | None, model: LightningModule) -> None:
    """Refuse a checkpoint trained for another task (the registered architectures' task
    arguments: classes, channels, variables, window, scale) by name, before torch reports a size
    mismatch."""
    if not path or not Path(path).is_file():
        return
    from metamixer.core.architectures import ARCHITECTURES

    saved = read_checkpoint(path).get("hyper_parameters") or {}
    for key in sorted({k for entry in ARCHITECTURES.values() for k in entry.task_args}):
        if key in saved and key in model.hparams and saved[key] != model.hparams[key]:
            raise ValueError(
                f"{path} was trained with {key}={saved[key]} but this data gives "
                f"{key}={model.hparams[key]}; use data that matches the checkpoint"
            )


def data_module_names(base: Any) -> str:
    """``--help``'s list of the data modules a task takes: the subclasses of its data base class
    that nothing derives from (the ones a user picks), by the short name ``--data`` accepts."""
    from jsonargparse._typehints import get_all_subclass_paths  # what jsonargparse would list

    classes = [import_object(p) for p in get_all_subclass_paths(base, closed_types=False)]
    leaves = sorted(
        c.__name__ for c in classes if not any(o is not c and issubclass(o, c) for o in classes)
    )
    return f", data modules: {', '.join(leaves)} (--data NAME; --data.help NAME lists its options)"


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
    * every invocation writes into its own run folder (``metamixer.lab.runs``:
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
    """

    def __init__(self, task: Task, *, args: list[str] | None = None, run: bool = True) -> None:
        self.task = task
        self.links = task.links
        self.started = time.time()
        self.modality = task.modality
        self.run_dir: Path | None = None
        self._earlier_rows: list[dict[str, str]] | None = None  # metrics.csv of a resumed fit
        if args is None:
            sys.argv[1:], self.imports = split_imports(sys.argv[1:])
        else:
            args, self.imports = split_imports(args)
        import_modules(self.imports)
        super().__init__(
            task.model_class(),
            task.data_class(),
            subclass_mode_data=task.subclass_mode_data,
            parser_class=MetaMixerArgumentParser,
            parser_kwargs={"prog": f"metamixer {task.name}"},
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
        data = parser._option_string_actions.get("--data")
        if data is not None and hasattr(data, "extra_help"):  # the task's data modules, by name
            data.extra_help = lambda: data_module_names(data._typehint)
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="experiment name of the run folder (default: the last --config file's stem)",
        )
        parser.add_argument(
            "--imports",
            type=list[str],
            default=[],
            help="modules imported before the classes are built (e.g. a user's mixers): "
            "--import MODULE adds one; a run's saved config lists them, so test / predict "
            "of the run import them again",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the best checkpoint (or the last weights) once training ends",
        )

    def _parse_ckpt_path(self) -> None:
        """Before Lightning reads ``--ckpt_path``'s hyperparameters as this task's model arguments,
        a checkpoint written by another task is refused by name."""
        subcommand = self.config.get("subcommand")
        path = subcommand and self.config[subcommand].get("ckpt_path")
        if path and Path(path).is_file():
            checkpoint = read_checkpoint(path)
            written = (checkpoint.get("metamixer") or {}).get("task")
            if written and written != self.task.name:
                arch = (checkpoint.get("hyper_parameters") or {}).get("arch")
                what = f"a {written} checkpoint" + (f" ({arch})" if arch else "")
                raise ValueError(
                    f"{path} is {what}; `metamixer {self.task.name} {subcommand}` needs a "
                    f"{self.task.name} checkpoint: run `metamixer {written} {subcommand} "
                    f"--ckpt_path {path}`"
                )
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        config.imports = list(dict.fromkeys([*(config.get("imports") or []), *self.imports]))
        import_modules(config.imports)
        check_precision(config.trainer.get("precision"), config.trainer.get("accelerator"))
        join_launcher(config.trainer)
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
        """Build the classes; an error of a class being built is raised as itself, named by the
        class."""
        try:
            super().instantiate_classes()
        except Exception as err:
            self._discard_empty_run()
            cause = cause_in_union(err)
            if cause is err or os.environ.get("METAMIXER_DEBUG"):
                raise
            raise cause from None
        for attr, name in self.task.model_handoffs:
            setattr(self.model, name, getattr(self.datamodule, attr))

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
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]  # set in Trainer.__init__, undeclared
        callbacks.append(RestoreLoaderState())
        callbacks.append(RunProvenance(self.task.name, list(config.get("imports") or [])))
        writer = self.task.writer_class()
        if self.subcommand == "predict" and writer is not None:
            given = {arg: getattr(self.datamodule, attr, None) for attr, arg in self.task.handoffs}
            callbacks.append(writer(**given))
        if self._earlier_rows is not None:
            callbacks.append(KeepEarlierRows(self._earlier_rows))
        return trainer

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt = (
            "best"
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path
            else None
        )
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        self.after_test()

    def after_test(self) -> None:
        """Write the test metrics as ``metrics.json`` and the run's record (``record.json``, see
        ``metamixer.lab.results``) into the run folder."""
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective under DDP
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        write_text(folder / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True))
        config = self.config.get(self.subcommand)
        saved = folder / "config.yaml"
        results.write_record(
            folder, modality=self.modality, experiment=config.get("name") or "default",
            subcommand=str(self.subcommand), metrics=metrics,
            config_yaml=saved.read_text() if saved.is_file() else self.parser.dump(self.config),
            seed=config.get("seed_everything"), datamodule=self.datamodule, started=self.started,
            task=self.task.name, imports=config.get("imports") or [],
        )  # fmt: skip
