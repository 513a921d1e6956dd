"""Launching turns, once per attempt: a client's start message, and the next turn after a stored one."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from celery import Celery
from sqlmodel import Session

from db import crud
from db.engine import get_engine
from db.retry import with_retries
from pipeline.context import Exchange
from pipeline.learned import route, stored_learned
from pipeline.plan import RunConfig, TurnPlan, plan_turn
from pipeline.policy import TurnRoles
from pipeline.records import TurnContext
from pipeline.service.canvas import turn_signature
from pipeline.shortlist import StoredOutcome, resume
from workers.results import sending_only
from workers.runtime import Runtime, runtime_of

log = logging.getLogger(__name__)


def start_turn(app: Celery, context: TurnContext, run: RunConfig) -> None:
    """Launch attempt ``context.attempt`` of a turn a client sent: once, however often its start
    message is delivered.

    The launch is claimed in the database first (``started``); a second delivery, or a
    stale message whose attempt a resend has replaced, launches nothing. The turn is then
    decided under the conversation's policy state (opened for a new conversation, caught
    up with any stored turn it missed) and its canvas applied. A worker that dies between
    the claim and the canvas leaves the turn to ``peerblend recover`` (a new attempt).
    """
    runtime = runtime_of(app)
    engine = get_engine(runtime.settings.database)
    conversation_id, turn_index = context.conversation_id, context.turn_index

    def claim() -> tuple[bool, list[StoredOutcome]]:
        with Session(engine) as session:
            if not crud.claim_start(
                session=session,
                conversation_id=conversation_id,
                turn_index=turn_index,
                attempt=context.attempt,
            ):
                return False, []
            if not run.keeps_state:
                return True, []
            results = crud.list_results(session=session, conversation_id=conversation_id)
            return True, [StoredOutcome(r.turn_index, r.decision, r.ranking, r.scores) for r in results]

    where = f"start of turn {conversation_id}/{turn_index} (attempt {context.attempt})"
    claimed, stored = with_retries(where, claim, budget_s=runtime.settings.store_retry_s)
    if not claimed:
        log.info("%s: launched before, or a newer attempt was sent; not launched again", where)
        return
    decision = with_retries(
        where,
        lambda: resume(
            runtime.policy_store,
            runtime.committee,
            run,
            conversation_id=conversation_id,
            turn_index=turn_index,
            n_turns=context.n_turns,
            stored=stored,
            routed=_routed(runtime, context, run),
        ),
        budget_s=runtime.settings.store_retry_s,
    )
    launch(app, plan_turn(runtime.committee, context, run, decision))


def _routed(runtime: Runtime, context: TurnContext, run: RunConfig) -> tuple[str, ...]:
    """learned-route: the members that answer this conversation alone, from the learned decision."""
    if run.policy != "learned-route" or context.turn_index != 0:
        return ()
    model, _ = stored_learned(runtime.policy_store, runtime.committee)
    committee = runtime.committee
    gain = committee.route_min_gain / 100
    return route(model, committee.generators, has_passage=bool(context.passage), top=run.top_k, min_gain=gain)


def send_next_turn(
    app: Celery,
    session: Session,
    context: TurnContext,
    answer: str,
    decision: TurnRoles,
    *,
    run: RunConfig,
) -> None:
    """Send turn t+1, which sees this turn's blended answer: once, however often this task runs.

    Sending is claimed in the database first (attempt 0 -> 1); a redelivered or
    concurrent aggregate of turn t loses the claim and sends nothing. This task is
    on a worker already, so it applies the canvas itself (no start message).
    """
    following = context.turn_index + 1
    conversation_id = context.conversation_id
    turn = crud.get_turn(session=session, conversation_id=conversation_id, turn_index=following)
    if turn is None:
        raise RuntimeError(f"conversation {conversation_id} has no question {following}")
    claimed = turn.attempt == 0 and crud.claim_send(
        session=session, conversation_id=conversation_id, turn_index=following, seen_attempt=0, launched=True
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
    launch(app, plan_turn(runtime_of(app).committee, next_context, run, decision))


def launch(app: Celery, plan: TurnPlan) -> None:
    """Apply a turn's canvas from a worker.

    Nothing in a worker waits on the canvas's tasks, so it subscribes to none of their
    results (``workers.results.sending_only``; Celery would keep a waiter per task for as
    long as the worker lives). Nor is the canvas recorded as children of the task
    applying it: Celery would store it in that task's result, and every client reading
    the result (the aggregate of the turn before) would subscribe to the next turn's tasks.
    """
    with sending_only():
        turn_signature(plan, app=app).apply_async(add_to_parent=False)
