"""Sending a conversation's next turn: once, however often the task that sends it runs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from celery import Celery
from sqlmodel import Session

from db import crud
from pipeline.canvas import turn_signature
from pipeline.context import Exchange
from pipeline.plan import RunConfig, TurnPlan
from pipeline.policy import TurnDecision
from pipeline.records import TurnContext

log = logging.getLogger(__name__)


def send_next_turn(
    app: Celery,
    session: Session,
    context: TurnContext,
    answer: str,
    decision: TurnDecision,
    *,
    run: RunConfig,
) -> None:
    """Send turn t+1, which sees this turn's blended answer: once, however often this task runs.

    Sending is claimed in the database first (attempt 0 -> 1); a redelivered or
    concurrent aggregate of turn t loses the claim and sends nothing.
    """
    following = context.turn_index + 1
    conversation_id = context.conversation_id
    turn = crud.get_turn(session=session, conversation_id=conversation_id, turn_index=following)
    if turn is None:
        raise RuntimeError(f"conversation {conversation_id} has no question {following}")
    claimed = turn.attempt == 0 and crud.claim_send(
        session=session, conversation_id=conversation_id, turn_index=following, seen_attempt=0
    )
    if not claimed:
        log.info("turn %s/%s was sent before; not sent again", conversation_id, following)
        return
    next_context = replace(
        context,
        turn_index=following,
        question=turn.question,
        enqueued_at=time.time(),
        history=(*context.history, Exchange(context.question, answer)),
        attempt=1,
    )
    turn_signature(TurnPlan(next_context, run, decision), app=app).apply_async()
