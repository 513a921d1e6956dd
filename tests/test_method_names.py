"""No layer branches on a method's name: each method is asked (``pipeline.method.Method``).

A method's name ("peer", "pairwise", "single:<member>") may appear in its own module and in
the registry (``pipeline.plan.VARIANTS``); anywhere else in pipeline/, workers/ and db/, a
comparison with it (``==``, ``!=``, ``in``), a ``match`` case on it, a ``startswith`` test of
it or a dict keyed by it (a dispatch table) is a rule of that method living outside its home.
The source is read with `ast`, so docstrings, comments and messages do not count.

Two other vocabularies share a word with the methods, and are told apart by what they are
compared with: a ranking's status (``Standings.status``: "single", one usable candidate) and a
rerank rule's kind (``Rule.kind``: "single", one member's answer).
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

from pipeline.plan import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "workers", "db")
OTHER_VOCABULARIES = {"status", "kind"}  # what a status or a rule kind is read from


def _homes() -> dict[str, set[Path]]:
    """Each method's name -> the files where it may be branched on: its module and the registry."""
    registry = ROOT / "pipeline" / "plan.py"
    return {
        name: {ROOT / Path(*type(method).__module__.split(".")).with_suffix(".py"), registry}
        for name, method in VARIANTS.items()
    }


def _terminal(node: ast.expr) -> str | None:
    """The name an expression reads last: ``method``, ``run.method``, ``row["method"]`` -> "method"."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def _strings(node: ast.expr) -> Iterator[str]:
    """The string literals of an operand: itself, or the items of a literal tuple, list or set."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            yield from _strings(item)


def _named(text: str, names: Collection[str]) -> str | None:
    """The method a literal names ("peer", or "single:m0" / "single:" for a method taking a member)."""
    head = text.partition(":")[0]
    return head if head in names else None


def _other_vocabulary(operands: list[ast.expr]) -> bool:
    return any(_terminal(o) in OTHER_VOCABULARIES for o in operands)


def _literals(node: ast.AST) -> Iterator[tuple[str, str]]:
    """(literal, what) for the string literals by which one node branches, whatever they name."""
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        if not _other_vocabulary(operands):
            yield from ((text, f"compares with {text!r}") for o in operands for text in _strings(o))
    elif isinstance(node, ast.Match) and not _other_vocabulary([node.subject]):
        values = (
            p.value for case in node.cases for p in ast.walk(case.pattern) if isinstance(p, ast.MatchValue)
        )
        yield from ((text, f"matches case {text!r}") for value in values for text in _strings(value))
    elif isinstance(node, ast.Dict):
        keys = (key for key in node.keys if key is not None)
        yield from ((text, f"dispatches on dict key {text!r}") for key in keys for text in _strings(key))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        test = node.func.attr
        if test in ("startswith", "endswith"):
            yield from ((text, f"tests {test}({text!r})") for text in _strings(node.args[0]))


def branches_on_names(source: str, names: Collection[str]) -> list[tuple[int, str, str]]:
    """(line, method name, what) for every place ``source`` branches on one of ``names``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        for text, what in _literals(node):
            name = _named(text, names)
            if name is not None:
                found.append((getattr(node, "lineno", 0), name, what))
    return sorted(found)


def test_the_checker_catches_each_kind_of_branch_and_spares_the_other_vocabularies() -> None:
    # Given: a planted module that branches on method names in every way the checker knows
    source = """
def f(row, run, ranked, rule, method):
    if row["method"] != "pairwise":
        pass
    if run.method in ("peer", "pairwise"):
        pass
    if method.startswith("single:"):
        pass
    match method:
        case "peer":
            pass
    handlers = {"peer": 1, "pairwise": 2}
    # Not method names: a ranking's status, a rerank rule's kind, a message, a stored field
    if ranked.status == "single" or rule.kind == "single":
        pass
    return f"method {method!r} is not peer", {"method": "pairwise"}
"""
    # When
    found = branches_on_names(source, ["peer", "pairwise", "single"])

    # Then: every branch, and nothing else
    assert found == [
        (3, "pairwise", "compares with 'pairwise'"),
        (5, "pairwise", "compares with 'pairwise'"),
        (5, "peer", "compares with 'peer'"),
        (7, "single", "tests startswith('single:')"),
        (9, "peer", "matches case 'peer'"),
        (12, "pairwise", "dispatches on dict key 'pairwise'"),
        (12, "peer", "dispatches on dict key 'peer'"),
    ]


def test_no_layer_branches_on_a_methods_name_outside_its_module_and_the_registry() -> None:
    homes = _homes()
    outside = [
        f"{path.relative_to(ROOT)}:{line}: {what} (method {name!r} lives in "
        f"{', '.join(sorted(str(h.relative_to(ROOT)) for h in homes[name]))})"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name, what in branches_on_names(path.read_text(), homes)
        if path not in homes[name]
    ]
    assert outside == [], "ask the method (pipeline.method.Method) instead:\n" + "\n".join(outside)


def test_every_method_has_a_home_module() -> None:
    for name, paths in _homes().items():
        assert all(p.is_file() for p in paths), name
