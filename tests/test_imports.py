"""The import graph of pipeline/, workers/ and db/: no cycles, and arrows only downwards.

The graph is read from the source with `ast`, not by importing, so a module that needs
Celery or torch costs nothing here and a broken import cannot hide an arrow.

Function-level imports count as arrows: a lazy import postpones a dependency, it does not
remove it, and "import it inside the function" is the usual way a cycle is hidden rather
than broken. Imports under `if TYPE_CHECKING:` do not count for the runtime graph: they
never run. A second check counts them too (`with_type_only=True`): the issue's cycles
(client <-> live, serve <-> web, report <-> tables) were all of that kind, and were broken
rather than excused.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "workers", "db")
# Which layers each one may import: db/ is the bottom, then the pure method (pipeline/ without
# its service/), then the service around it (pipeline/service/: Celery, the database), workers/ the top.
ALLOWED_LAYERS = {
    "db": {"db"},
    "pipeline": {"pipeline"},
    "pipeline.service": {"pipeline.service", "pipeline", "db"},
    "workers": {"workers", "pipeline.service", "pipeline", "db"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_in(node: ast.AST, *, with_type_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``node`` (itself included), at any depth; those under
    `if TYPE_CHECKING:` only ``with_type_only``."""
    if not with_type_only and isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.orelse:  # an `else:` of TYPE_CHECKING does run
            yield from _imports_in(stmt, with_type_only=with_type_only)
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _imports_in(child, with_type_only=with_type_only)


def _imported(
    name: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> Iterator[str]:
    """The modules of the tree that one import statement loads (a submodule when it names one)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for target in targets:
        # `import pipeline.borda.x` loads the longest prefix that is a module of the tree.
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                yield ".".join(parts[:end])
                break


def graph_of(sources: dict[str, tuple[str, bool]], *, with_type_only: bool = False) -> dict[str, set[str]]:
    """module -> the modules among ``sources`` it imports; ``sources``: name -> (code, is a package)."""
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for name, (code, is_package) in sources.items():
        nodes = _imports_in(ast.parse(code), with_type_only=with_type_only)
        graph[name] = {t for node in nodes for t in _imported(name, is_package, node, known) if t != name}
    return graph


def import_graph(*, with_type_only: bool = False) -> dict[str, set[str]]:
    """module -> the modules of pipeline/, workers/ and db/ that it imports."""
    sources = {name: (path.read_text(), path.name == "__init__.py") for name, path in _modules().items()}
    return graph_of(sources, with_type_only=with_type_only)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _layer(module: str) -> str:
    if module == "pipeline.service" or module.startswith("pipeline.service."):
        return "pipeline.service"
    return module.split(".")[0]


def test_the_checker_sees_lazy_imports_and_skips_type_only_ones() -> None:
    # Given: a imports b in a function, b imports a at the top, c imports a for types only,
    # d imports c in the else of a TYPE_CHECKING test (which runs)
    sources = {
        "pkg": ("", True),
        "pkg.a": ("def f():\n    from pkg import b\n", False),
        "pkg.b": ("from . import a\n", False),
        "pkg.c": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n", False),
        "pkg.d": ("import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    import pkg.c\n", False),
    }

    # When the graph is read
    graph = graph_of(sources)

    # Then the lazy import is an arrow, the relative one resolves, the type-only one is none
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set(), "pkg.d": {"pkg.c"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert graph_of(sources, with_type_only=True)["pkg.c"] == {"pkg.a"}


def test_the_tree_is_read() -> None:
    graph = import_graph()

    assert {"pipeline.borda", "workers.turn", "db.crud"} <= set(graph)
    assert "pipeline.borda" in graph["pipeline.aggregate"]  # a known arrow is found


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_cycle_even_through_type_only_imports() -> None:
    # A cycle that only the type checker follows still makes two modules that cannot be read,
    # moved or tested one without the other; none is left, so keep it that way.
    assert cycles(import_graph(with_type_only=True)) == []


@pytest.mark.parametrize("with_type_only", [False, True])
def test_imports_point_down_the_layers(with_type_only: bool) -> None:
    # db/ is the bottom (it imports neither pipeline/ nor workers/); the pure method imports
    # neither db/ nor pipeline/service/; nothing in pipeline/ imports workers/.
    graph = import_graph(with_type_only=with_type_only)

    upward = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if _layer(b) not in ALLOWED_LAYERS[_layer(a)]
    )

    assert upward == []


def test_the_service_is_its_own_layer() -> None:
    # The pure method may not reach the database through the service either.
    assert _layer("pipeline.service.client") == "pipeline.service"
    assert _layer("pipeline.borda") == "pipeline"
    assert "db" not in ALLOWED_LAYERS["pipeline"] and "pipeline.service" not in ALLOWED_LAYERS["pipeline"]


# The server, the pages and the CLI (its evaluation commands too) read and write conversations
# through the client's Store (pipeline/service/store.py), never with db/'s queries or a session
# of their own; only the workers' tasks (turn.py, dispatch.py, progress.py) write with db/ directly.
EDGES = (
    "workers.serve",
    "workers.chat",
    "workers.web",
    "workers.cli",
    "workers.recovery",
    "workers.evaluation",
)
QUERIES = {"db.crud", "db.live", "db.judgements", "db.runs", "db.events"}


def _is_edge(module: str) -> bool:
    return any(module == e or module.startswith(e + "_") or module.startswith(e + ".") for e in EDGES)


def test_the_edges_go_through_the_store() -> None:
    graph = import_graph(with_type_only=True)
    edges = [m for m in graph if _is_edge(m)]
    assert {"workers.serve", "workers.web_runs", "workers.cli_evaluation", "workers.web_evaluate"} <= set(
        edges
    )

    around = sorted(f"{m} -> {t}" for m in edges for t in graph[m] if t in QUERIES)
    sessions = sorted(m for m in edges if "Session(" in _modules()[m].read_text())

    assert around == []
    assert sessions == []
