"""``metamixer``: one command for every task.

    metamixer TASK {fit,validate,test,predict} --config …      Lightning's verbs (LightningCLI)
    metamixer TASK predict-files RUN/checkpoints/best.ckpt INPUT   a trained run on your own files
    metamixer TASK VERB …                                       the task's tools (export, analyze, …)
    metamixer sweep FILE …  |  metamixer results {collect,readme} …   the lab's own commands
    metamixer [--import MODULE] …                               import a module first (mixers, tasks)

``python -m metamixer.<modality>`` and ``python -m metamixer.<modality>.predict`` are the same
commands under their older names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metamixer.core.registry import import_modules

from .tasks import Task, discover, get_task, resolve

#: the verbs of every task that LightningCLI runs
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
#: the lab's own commands (not tasks): name -> "module:function"
LAB_COMMANDS = {"sweep": "metamixer.lab.sweep:main", "results": "metamixer.lab.results:main"}


def task_cli(name: str, args: list[str] | None = None, run: bool = True) -> Any:
    """The LightningCLI of task ``name`` (``args``: the verb and its options; ``None`` reads
    ``sys.argv``); returns the ``MetaMixerCLI``."""
    from .cli import MetaMixerCLI

    return MetaMixerCLI(get_task(name), args=args, run=run)


def run_lightning(name: str, args: list[str]) -> Any:
    """``task_cli`` run as if ``args`` were the process's own arguments (LightningCLI reads the
    command line itself; handing it a list beside another command line makes it warn)."""
    saved = sys.argv
    sys.argv = [f"metamixer {name}", *args]
    try:
        return task_cli(name)
    finally:
        sys.argv = saved


def predict_files(task: Task, argv: list[str]) -> None:
    """``predict-files CHECKPOINT INPUT [options]``: ``predict`` with the run's saved config, the
    checkpoint and ``--data.predict_path INPUT``; the files land in a new ``predict-<time>`` run
    folder beside the run."""
    parser = argparse.ArgumentParser(
        prog=f"metamixer {task.name} predict-files", allow_abbrev=False,
        description=f"Apply a trained {task.name} checkpoint to your own files; further "
        f"options are those of `metamixer {task.name} predict`.",
    )  # fmt: skip
    parser.add_argument("checkpoint", help="RUN/checkpoints/<name>.ckpt of a fit run")
    parser.add_argument("input", help="the file or folder to predict")
    args, extra = parser.parse_known_args(argv)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    config = checkpoint.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(
            f"no config.yaml in {config.parent} (the checkpoint's run folder); run `metamixer "
            f"{task.name} predict --config CONFIG --ckpt_path {checkpoint} --data.predict_path "
            f"{args.input}` instead"
        )
    run_lightning(task.name, ["predict", "--config", str(config), f"--ckpt_path={checkpoint}",
                              f"--data.predict_path={args.input}", *extra])  # fmt: skip


def verbs(task: Task) -> list[str]:
    return list(dict.fromkeys([*LIGHTNING_VERBS, "predict-files", *task.tools]))


def run_verb(name: str, argv: list[str], imports: Sequence[str] = ()) -> None:
    """Run ``metamixer NAME ARGV…`` (``NAME``: a task or a lab command); ``imports``: the modules
    given with ``--import`` (imported already), recorded by the runs the command starts."""
    if name in LAB_COMMANDS:
        resolve(LAB_COMMANDS[name])(argv)
        return
    task = get_task(name)
    verb = argv[0] if argv else None
    again = [f"--import={m}" for m in imports]
    if verb is not None and verb in task.tools:
        task.tool(verb)([*argv[1:], *(again if verb == "predict-files" else [])])
    elif verb in LIGHTNING_VERBS or verb in ("-h", "--help", "--print_config"):
        run_lightning(name, [*argv, *again])
    elif verb == "predict-files":
        predict_files(task, [*argv[1:], *again])
    else:
        raise ValueError(
            f"unknown verb {verb!r} of task {name!r}; verbs: {', '.join(verbs(task))}"
            if verb
            else f"metamixer {name} needs a verb: {', '.join(verbs(task))}"
        )


def usage() -> str:
    tasks = discover()
    rows = [
        f"  {t.name:<14} {' | '.join(verbs(t))}"
        for t in sorted(tasks.values(), key=lambda t: t.name)
    ]
    rows += [f"  {name:<14} (lab)" for name in LAB_COMMANDS]
    return (__doc__ or "").split("\n\n")[1] + "\n\ntasks and their verbs:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from .cli import run_cli, split_imports

    def go() -> None:
        args, modules = split_imports(list(sys.argv[1:] if argv is None else argv))
        import_modules(modules)
        if not args or args[0] in ("-h", "--help"):
            print(usage())
            return
        run_verb(args[0], args[1:], modules)

    run_cli(go)


def alias(name: str) -> Callable[..., Any]:
    """The ``main(args=None, run=True)`` of ``python -m metamixer.<modality>`` (task ``name``)."""

    def main(args: list[str] | None = None, run: bool = True) -> Any:
        return task_cli(name, args, run)

    return main


def files_alias(name: str) -> Callable[[list[str] | None], None]:
    """The ``main(argv)`` of ``python -m metamixer.<modality>.predict`` (task ``name``)."""

    def main(argv: list[str] | None = None) -> None:
        predict_files(get_task(name), list(sys.argv[1:] if argv is None else argv))

    return main


def run_alias(name: str, verb: str | None = None) -> None:
    """Run ``metamixer NAME [VERB] <the process's arguments>`` (the older module commands)."""
    main([name, *([verb] if verb else []), *sys.argv[1:]])


def entry() -> None:
    """Console script ``metamixer``."""
    main()
