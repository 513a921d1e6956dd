"""Functions short enough to read at a glance: none over 60 lines in pipeline/, workers/, db/.

A function's length is from its ``def`` to its last line, docstring and nested functions
included: a factory that defines its routes inline (``create_api``) is read as one piece,
so its routes count towards it. Decorators are not counted. Alembic's revision scripts
(db/migrations/) are left out: they are frozen history, one long list of tables, and are
never edited.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "workers", "db")
MAX_LINES = 60


def function_lengths(source: str) -> dict[str, int]:
    """``qualified name -> lines`` of every function and method in ``source``, nested ones too."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = (child.end_lineno or child.lineno) - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if "migrations" not in p.relative_to(ROOT).parts]


def test_lengths_count_from_def_to_the_last_line_with_nested_functions() -> None:
    source = (
        "@decorated\ndef outer():\n    '''Doc.'''\n    def inner():\n        return 1\n\n    return inner\n"
    )

    assert function_lengths(source) == {"outer": 6, "outer.inner": 2}


def test_no_function_is_longer_than_60_lines() -> None:
    sources = _sources()
    assert any(p.name == "verdict.py" for p in sources)

    long = sorted(
        f"{path.relative_to(ROOT)}: {name} ({lines} lines)"
        for path in sources
        for name, lines in function_lengths(path.read_text()).items()
        if lines > MAX_LINES
    )

    assert long == []
