"""A running turn's stages as they happen: each task writes what it produced as a turn event.

The generate, review and judge tasks return their records into the chord, and the turn's rows
are stored only once, by the aggregation task, at the end. A page or a stream that wants to
show each candidate as it arrives reads these events instead (``Store.turn_events``): one small row per
task, in the database, so it works the same embedded and distributed, whichever process runs
the task. Events are advisory and best effort: a failure to write one is logged and never fails
the task; a redelivered task writes its event again (readers keep the newest per member).
"""

from __future__ import annotations

import logging
from typing import Any

from db import events
from db.engine import get_engine
from pipeline.records import TurnContext
from workers.runtime import Runtime

log = logging.getLogger(__name__)

KINDS = ("candidate", "ballot", "judgement")


def record_event(
    runtime: Runtime, context: TurnContext, kind: str, member: str, record: dict[str, Any]
) -> None:
    """Write ``record`` (a task's JSON result) as an event of ``context``'s turn, without the
    candidates a ballot or judgement carries along (the candidate events have them). Only for
    a turn someone watches (``context.progress``: a live conversation's); one INSERT, no ORM
    session (a replay of 200 turns measured 30 ms more worker CPU a turn with every task of
    every turn writing one through a session)."""
    if not context.progress:
        return
    payload = {k: v for k, v in record.items() if k != "candidates"}
    try:
        with get_engine(runtime.settings.database).begin() as connection:
            events.add_event(
                connection,
                conversation_id=context.conversation_id,
                turn_index=context.turn_index,
                kind=kind,
                member=member,
                payload=payload,
            )
    except Exception as error:  # noqa: BLE001 - progress is advisory; the turn goes on
        log.warning(
            "turn %s/%s: %s event not written: %s", context.conversation_id, context.turn_index, kind, error
        )
