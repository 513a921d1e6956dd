"""A live turn's events (workers/progress.py writes them, a page or a stream reads them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert
from sqlmodel import Session, col, select

from db.crud import utc_now
from db.models import TurnEvent


def add_event(
    connection: Connection,
    *,
    conversation_id: str,
    turn_index: int,
    kind: str,
    member: str,
    payload: dict[str, Any],
) -> None:
    """One INSERT on the caller's connection (committed with it): no ORM unit of work for a row
    nobody reads back."""
    row = {
        "conversation_id": conversation_id,
        "turn_index": turn_index,
        "kind": kind,
        "member": member,
        "payload": payload,
        "created_at": utc_now(),
    }
    connection.execute(insert(TurnEvent), [row])


def turn_events(
    *, session: Session, conversation_id: str, turn_index: int, after: int = 0
) -> list[TurnEvent]:
    """The events of a turn written after event id ``after``, oldest first."""
    query = (
        select(TurnEvent)
        .where(
            TurnEvent.conversation_id == conversation_id,
            TurnEvent.turn_index == turn_index,
            col(TurnEvent.id) > after,
        )
        .order_by(col(TurnEvent.id))
    )
    return list(session.exec(query))
