"""pipeline/ stays pure: importing it pulls in no Celery, torch, transformers or ORM."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pipeline

# The service around the method (the client, its canvas, live conversations, settings) may
# import Celery and the database; everything else in pipeline/ is the pure method.
SERVICE = "pipeline.service"
HEAVY = ("celery", "torch", "transformers", "sqlmodel", "sqlalchemy")


def _pure_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")]
    return sorted(n for n in names if n != SERVICE and not n.startswith(SERVICE + "."))


def test_module_discovery_finds_the_core() -> None:
    modules = _pure_modules()

    assert {"pipeline.borda", "pipeline.ballot", "pipeline.stages", "pipeline.aggregate"} <= set(modules)
    assert not [m for m in modules if m.startswith(SERVICE)]


def test_pure_modules_import_no_heavy_dependency() -> None:
    # Given a fresh interpreter (this test process may already hold celery or torch)
    modules = _pure_modules()
    code = (
        f"import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        f"    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )

    # When every pure module is imported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    # Then none of the heavy packages was loaded
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
