"""Policy state stores: Redis in distributed mode, the database in embedded mode.

Both offer an atomic read-modify-write (``update``) of a JSON value per key, so
concurrent conversations of one committee (p3 counts them all) never lose an update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from db.models import PolicyState

Change = Callable[[dict[str, Any] | None], dict[str, Any]]
PREFIX = "peerblend:policy:"
TTL_S = 30 * 24 * 3600  # policy state of idle committees and conversations expires


class RedisPolicyStore:
    """Optimistic transactions (WATCH / MULTI / EXEC), retried when another client wrote first."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.client.get(PREFIX + key)
        return None if raw is None else json.loads(raw)

    def update(self, key: str, change: Change) -> dict[str, Any]:
        name = PREFIX + key
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    value = change(None if raw is None else json.loads(raw))
                    pipe.multi()
                    pipe.set(name, json.dumps(value), ex=TTL_S)
                    pipe.execute()
                    return value
                except redis.WatchError:
                    continue


class SqlPolicyStore:
    """A row per key with a version number; an update applies only to the version it read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(PolicyState, key)
            return None if row is None else dict(row.value)

    def update(self, key: str, change: Change) -> dict[str, Any]:
        while True:
            with Session(self.engine) as session:
                row = session.get(PolicyState, key)
                if row is None:
                    value = change(None)
                    session.add(PolicyState(key=key, value=value, version=1))
                    try:
                        session.commit()
                        return value
                    except IntegrityError:  # created meanwhile: read it and try again
                        session.rollback()
                        continue
                value = change(dict(row.value))
                applied = session.execute(
                    sql_update(PolicyState)
                    .where(PolicyState.key == key, PolicyState.version == row.version)  # type: ignore[arg-type]
                    .values(value=value, version=row.version + 1)
                )
                session.commit()
                if applied.rowcount == 1:  # type: ignore[attr-defined]
                    return value
