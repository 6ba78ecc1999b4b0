"""The import graph, drawn from the code (``ast``, nothing imported): the library (``metamixer.core``)
imports nothing of the lab or the modalities, no modality imports another, a modality's
``models/`` imports nothing above it, writers import no command line, and no module takes part in
an import circle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): path
    for src in ROOT.glob("packages/*/src")
    for path in src.rglob("*.py")
}


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from P import x`` counts as ``P.x`` when that is
    a module, else as ``P``)."""
    path = SOURCES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base)
    return {m for m in found if m in SOURCES}


GRAPH = {module: imports(module) for module in SOURCES}


def layer(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_covers_every_package():
    assert {layer(m) for m in GRAPH} == {"core", "lab", "vision", "timeseries", "superres",
                                         "pointcloud"}  # fmt: skip


def test_the_library_imports_nothing_of_the_lab_or_the_modalities():
    wrong = {
        m: sorted(i for i in GRAPH[m] if layer(i) != "core") for m in GRAPH if layer(m) == "core"
    }
    assert {m: i for m, i in wrong.items() if i} == {}


def test_the_lab_imports_no_modality_and_no_modality_imports_another():
    wrong = {
        m: sorted(i for i in GRAPH[m] if layer(i) not in ("core", "lab", layer(m))) for m in GRAPH
    }
    assert {m: i for m, i in wrong.items() if i} == {}


#: a modality's library-level modules beside its networks: its spatial ops and sparse carrier
SPATIAL = ("ops", "sparse", "_spconv")


def test_models_never_import_upward():
    """A modality's networks (``metamixer.<m>.models.*``) import the library, each other and the
    modality's spatial ops only: no Lightning module, data, weights file or command line."""

    def allowed(module: str, target: str) -> bool:
        parts = target.split(".")
        same = parts[:2] == module.split(".")[:2]
        return layer(target) == "core" or (same and parts[2] in ("models", *SPATIAL))

    networks = [m for m in GRAPH if m.split(".")[2:3] == ["models"]]
    assert len(networks) >= 4
    wrong = {m: sorted(i for i in GRAPH[m] if not allowed(m, i)) for m in networks}
    assert {m: i for m, i in wrong.items() if i} == {}


@pytest.mark.parametrize("writer", sorted(m for m in GRAPH if m.endswith((".writer", ".writers"))))
def test_writers_import_no_command_line(writer):
    assert not {i for i in GRAPH[writer] if i.endswith(("__main__", ".cli", ".main"))}


def test_no_import_circles():
    """Tarjan's strongly connected components: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []
