"""The import graph drawn from the sources (every ``import`` statement, in functions too): no
circles; neither the library (``metamixer.core``) nor a modality's network definitions
(``models``) reach anything of the lab, directly or through other modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    found = {}
    for src in sorted(ROOT.glob("packages/*/src")):
        for path in src.rglob("*.py"):
            parts = path.relative_to(src).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports; ``from P import m`` counts as importing ``P.m`` when
    that is a module.  A module's own parent packages are left out: Python imports them first
    whatever the module says."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                targets.add(whole if whole in known else base)
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_import_graph_has_no_circles():
    assert circles(graph()) == []


def test_the_circle_finder_sees_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]


def test_the_library_reaches_nothing_of_the_lab():
    edges = graph()
    assert reached(edges, "metamixer.core")  # the graph is not empty
    wrong = {(m, t) for m in edges if m.startswith("metamixer.core")
             for t in reached(edges, m) if is_lab(t)}  # fmt: skip
    assert wrong == set()


def reached(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in edges[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


#: the lab: the command line, run folders, records, and each task's Lightning modules, data
#: modules and task entries
LAB = ("metamixer.lab",)
LAB_MODULES = ("lit", "data", "tasks", "writer", "predict", "__main__")


def is_lab(name: str) -> bool:
    return name.startswith(LAB) or name.rpartition(".")[2] in LAB_MODULES


@pytest.mark.parametrize("package", ["vision", "timeseries", "pointcloud", "superres"])
def test_network_definitions_reach_nothing_of_the_lab(package):
    edges = graph()
    models = f"metamixer.{package}.models"
    assert models in edges and reached(edges, models)
    wrong = {(m, t) for m in edges if m == models or m.startswith(models + ".")
             for t in reached(edges, m) if is_lab(t)}  # fmt: skip
    assert wrong == set()
