"""The task table: what ``metamixer TASK VERB`` runs for each task.

A modality registers its tasks in a module of its own (``metamixer.vision.tasks``), named in its
package metadata under the entry-point group ``metamixer.tasks``; a user's task registers the same
way in a module loaded with ``--import``::

    register_task(
        "vision", model="metamixer.vision.classification.lit:ImageClassifier",
        data="lightning.pytorch:LightningDataModule",
        links=[("data.num_classes", "model.num_classes")],
        writer="metamixer.vision.classification.writer:ClassificationWriter",
        tools={"export": "metamixer.vision.export:main"},
    )

Classes may be given as ``"module:Name"`` strings, imported only when the task runs, so that
listing the tasks stays cheap.  A writer is a ``BasePredictionWriter`` whose module imports
nothing of the command line (checked when the task is registered, without importing it).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: entry-point group naming the modules that register a distribution's tasks
ENTRY_POINTS = "metamixer.tasks"
#: modules a writer's module must not import (the writer is imported by the command line)
CLI_MODULES = ("metamixer.lab.cli", "metamixer.lab.main", "lightning.pytorch.cli")


@dataclass(frozen=True)
class Task:
    """One task of the command line.

    Args:
        name: the task's name on the command line (``metamixer NAME fit …``).
        model: the LightningModule (class or ``"module:Name"``).
        data: the data module: a class taken as is, or a base class whose subclasses are chosen by
            ``--data CLASS`` (``subclass_mode_data``).
        links: ``(data attribute, model argument)`` pairs resolved when the classes are built.
        writer: the prediction writer (``BasePredictionWriter``) added to ``predict``.
        handoffs: ``(data attribute, writer argument)`` pairs: what the writer is given from the
            data module (class names, a palette).
        model_handoffs: ``(data attribute, model attribute)`` pairs set on the model once both
            are built (a data module's inverse transform), so the model never reads the trainer's
            data module.
        subclass_mode_data: whether ``--data`` selects a subclass of ``data``.
        modality: the run folder's first level (``runs/<modality>/<experiment>/…``).
        tools: further verbs: verb -> ``"module:function"``, a function taking the arguments.
        data_modules: modules imported for their data modules (listed in ``--help`` by name).
        description: one line for ``metamixer --help``.
    """

    name: str
    model: type | str
    data: type | str
    links: tuple[tuple[str, str], ...] = ()
    writer: type | str | None = None
    handoffs: tuple[tuple[str, str], ...] = ()
    model_handoffs: tuple[tuple[str, str], ...] = ()
    subclass_mode_data: bool = True
    modality: str = ""
    tools: Mapping[str, str] = field(default_factory=dict)
    data_modules: tuple[str, ...] = ()
    description: str = ""

    def model_class(self) -> type:
        return resolve(self.model)

    def data_class(self) -> type:
        for module in self.data_modules:
            importlib.import_module(module)
        return resolve(self.data)

    def writer_class(self) -> type | None:
        return None if self.writer is None else resolve(self.writer)

    def tool(self, verb: str) -> Callable[[list[str]], object]:
        return resolve(self.tools[verb])  # type: ignore[no-any-return]


TASKS: dict[str, Task] = {}


def resolve(target: Any) -> Any:
    """``"module:Name"`` -> the object (anything else is returned as it is)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _imported_modules(module: str) -> set[str]:
    """Every module that ``module``'s source imports (read with ``ast``, not run)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return set()
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _check_writer(task: str, writer: type | str) -> None:
    module = writer.partition(":")[0] if isinstance(writer, str) else writer.__module__
    bad = sorted(m for m in _imported_modules(module) if m in CLI_MODULES or m.endswith("__main__"))
    if bad:
        raise ValueError(
            f"task {task!r}: the writer's module {module} imports {', '.join(bad)}; a writer must "
            "not import the command line (it is imported by it)"
        )


def register_task(
    name: str,
    *,
    model: type | str,
    data: type | str,
    links: Sequence[tuple[str, str]] = (),
    writer: type | str | None = None,
    handoffs: Sequence[tuple[str, str]] = (),
    model_handoffs: Sequence[tuple[str, str]] = (),
    subclass_mode_data: bool = True,
    modality: str | None = None,
    tools: Mapping[str, str] | None = None,
    data_modules: Sequence[str] = (),
    description: str = "",
) -> Task:
    """Add a task to the table (see ``Task``); a name registered twice, or a writer whose module
    imports the command line, is refused here, naming it."""
    if name in TASKS:
        raise ValueError(f"task {name!r} is registered twice (first by {TASKS[name].model})")
    if writer is not None:
        _check_writer(name, writer)
    module = model if isinstance(model, str) else model.__module__
    task = Task(
        name,
        model,
        data,
        tuple(links),
        writer,
        tuple(handoffs),
        tuple(model_handoffs),
        subclass_mode_data,
        modality or module.split(".")[1],
        dict(tools or {}),
        tuple(data_modules),
        description,
    )
    TASKS[name] = task
    return task


_discovered = False


def discover() -> dict[str, Task]:
    """Import every installed distribution's task module (entry-point group ``metamixer.tasks``)
    once; returns the table."""
    global _discovered
    if not _discovered:
        _discovered = True
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            importlib.import_module(entry.value)
    return TASKS


def get_task(name: str) -> Task:
    """The task ``name``; an unknown one is one error naming the registered tasks."""
    tasks = discover()
    if name not in tasks:
        raise ValueError(
            f"unknown task {name!r}; tasks: {', '.join(sorted(tasks))} (a task of your own: "
            "--import MODULE, whose import calls metamixer.lab.tasks.register_task)"
        )
    return tasks[name]
