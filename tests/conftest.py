"""Shared fixtures: scripted committees, the embedded client, the real services."""

from __future__ import annotations

import os

# The scripted backend is a test backend: enabled for this process and for the
# worker and CLI subprocesses the tests start (they inherit os.environ).
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from pipeline.committee import Committee, Generation, Member  # noqa: E402
from pipeline.service.client import BlendClient  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers.backends.scripted import ScriptedBackend  # noqa: E402

REDIS_URL = os.environ.get("PEERBLEND_TEST_REDIS", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get("PEERBLEND_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


def smollm2_committee(name: str) -> Committee:
    """Two members on the offline SmolLM2-135M with short terse answers (one likelihood
    reviewer, one free-text ranker): the smallest real-model committee."""
    short = Generation(max_new_tokens=8, style="terse")
    return Committee(
        name=name,
        members=(
            Member(name="smol-a", backend="transformers", model="smollm2-135m", generation=short),
            Member(
                name="smol-b",
                backend="transformers",
                model="smollm2-135m",
                generation=short,
                review_method="ranking",
            ),
        ),
    )


def scripted_committee(
    n: int = 3,
    *,
    name: str = "scripted",
    queue_prefix: str = "",
    member_options: dict[str, dict[str, Any]] | None = None,
    **committee_fields: Any,
) -> Committee:
    """``n`` scripted members m0..m(n-1); odd members review by ranking, even by likelihood."""
    member_options = member_options or {}
    members = tuple(
        Member(
            name=f"m{i}",
            backend="scripted",
            model=f"model{i}",
            queue=f"{queue_prefix}peerblend.m{i}" if queue_prefix else "",
            review_method="ranking" if i % 2 else "likelihood",
            options=member_options.get(f"m{i}", {}),
        )
        for i in range(n)
    )
    return Committee(name=name, members=members, **committee_fields)


def scripted_backends() -> list[ScriptedBackend]:
    """The scripted backends built in this process (by any runtime), each with its own call log."""
    from workers.runtime import resident_backends

    return [b for b in resident_backends() if isinstance(b, ScriptedBackend)]


def scripted_calls() -> list[tuple[str, str, Any]]:
    """(model, kind, payload) of every call to those backends since the logs were cleared, backend by backend."""
    return [call for backend in scripted_backends() for call in backend.calls]


def clear_scripted_calls() -> None:
    for backend in scripted_backends():
        backend.calls.clear()


@pytest.fixture(autouse=True)
def _fresh_script_log() -> None:
    clear_scripted_calls()


@pytest.fixture(scope="session")
def _deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The embedded deployment in use: kept while tests ask for the same committee.

    Starting and stopping an in-process worker takes seconds, so consecutive tests
    with the same committee share one. Only one runs at a time: Celery resolves
    some signatures through the process's *current* app, so two embedded apps in
    one process would route each other's tasks.
    """
    state: dict[str, Any] = {}
    yield state
    if state:
        state["manager"].__exit__(None, None, None)


@pytest.fixture
def embedded(
    _deployment: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., BlendClient]:
    """A client of an embedded deployment (in-process worker, memory broker, SQLite) for a committee."""
    from workers.embedded import connect

    def start(committee: Committee | None = None) -> BlendClient:
        committee = committee or scripted_committee()
        key = committee.model_dump_json()
        if _deployment.get("key") != key:
            if _deployment:
                _deployment.pop("manager").__exit__(None, None, None)
            settings = Settings(home=tmp_path_factory.mktemp("home"))
            manager = connect(settings, committee)
            _deployment.update(key=key, manager=manager, client=manager.__enter__())
        client: BlendClient = _deployment["client"]
        return client

    return start


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    yield from _fresh_database()


@pytest.fixture
def own_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test: no other test's conversations in it (what a test
    that recovers every stalled conversation of its database needs)."""
    yield from _fresh_database()


def _fresh_database() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"peerblend_test_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(f"{POSTGRES_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES_URL}/{name}"
    from db.engine import reset_engines

    reset_engines()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
