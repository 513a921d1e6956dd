"""The policy state store: the database, in every mode.

It offers an atomic read-modify-write (``update``) of a JSON value per key, so
concurrent conversations of one committee (p3 counts them all) never lose an
update. The database is the source of truth: Redis runs without persistence and
loses everything on a restart, so policy state and reviewer weights never live
there (nor expire).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import update as sql_update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from db.models import PolicyState

Change = Callable[[dict[str, Any] | None], dict[str, Any]]


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
