"""Finishing a turn: decide, fuse if asked, store once, send the next turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from celery import Celery
from sqlmodel import Session

from db import crud
from db.engine import get_engine
from db.models import Candidate, Review, TurnResultBase
from pipeline.aggregate import Decision, decide, top_k_texts
from pipeline.canvas import turn_signature
from pipeline.context import Exchange
from pipeline.plan import plan_turn
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.stages import fuse
from workers.runtime import Runtime, runtime_of

log = logging.getLogger(__name__)


def finish_turn(
    app: Celery,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    *,
    mode: str,
    policy: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    runtime = runtime_of(app)
    committee = runtime.committee
    decision = decide(
        candidates,
        reviews,
        committee_order=[m.name for m in committee.members],
        exclude_self=committee.exclude_self_votes,
    )
    ranked_at = time.time()
    answer, chosen, status, fusion_error = _select_or_fuse(runtime, context, candidates, decision, mode)
    timings = _timings(context, candidates, reviews, ranked_at)
    result = TurnResultBase(
        conversation_id=context.conversation_id,
        turn_index=context.turn_index,
        answer=answer,
        chosen=chosen,
        status=status,
        method=mode,
        policy=policy,
        ranking=list(decision.ranking),
        scores=decision.scores,
        timings=timings,
        decision={
            "generators": [c.member for c in candidates],
            "reviewers": [r.reviewer for r in reviews],
            "excluded": decision.excluded,
            "ballots": decision.ballots_used,
            "fusion_error": fusion_error,
            "ranking_status": decision.status,
        },
    )
    with Session(get_engine(runtime.settings.database), expire_on_commit=False) as session:
        stored, created = crud.save_turn(
            session=session,
            result=result,
            candidates=_candidate_rows(context, candidates),
            reviews=_review_rows(context, reviews),
        )
        if not created:
            log.info(
                "turn %s/%s was stored before; not written again", context.conversation_id, context.turn_index
            )
        if context.turn_index + 1 < context.n_turns:
            _send_next_turn(
                app,
                session,
                context,
                stored.answer,
                created=created,
                mode=mode,
                policy=policy,
                options=options,
            )
    return _outcome(stored)


def _select_or_fuse(
    runtime: Runtime,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    decision: Decision,
    mode: str,
) -> tuple[str, str | None, str, str | None]:
    """(answer, chosen member or None, status, fusion error or None)."""
    if decision.chosen is None:
        return "", None, decision.status, None
    best = top_k_texts(decision, candidates, 1)[0]
    if mode != "fuse":
        return best, decision.chosen, decision.status, None
    committee = runtime.committee
    aggregator = committee.member(committee.aggregator or "")
    texts = top_k_texts(decision, candidates, committee.top_k)
    try:
        fused = fuse(runtime.backend(aggregator), aggregator, committee, context, texts)
    except Exception as error:  # noqa: BLE001 - fall back to the top candidate, recorded
        log.warning("fusion by %s failed: %s", aggregator.name, error)
        return best, decision.chosen, "fusion_failed", f"{type(error).__name__}: {error}"[:500]
    if not fused:
        return best, decision.chosen, "fusion_failed", "empty fused answer"
    return fused, None, "fused", None


def _timings(
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    ranked_at: float,
) -> dict[str, float]:
    """Stage durations in seconds, from the turn's send time and each record's finish time."""
    now = time.time()
    generated = max((c.finished_at for c in candidates), default=context.enqueued_at)
    reviewed = max((r.finished_at for r in reviews), default=generated)
    return {
        "generation_s": max(0.0, generated - context.enqueued_at),
        "review_s": max(0.0, reviewed - generated),
        "aggregate_s": max(0.0, now - reviewed),
        "ranking_s": max(0.0, ranked_at - reviewed),
        "total_s": max(0.0, now - context.enqueued_at),
        "generation_model_s": max((c.seconds for c in candidates), default=0.0),
        "review_model_s": max((r.seconds for r in reviews), default=0.0),
        "model_calls": float(len(candidates) + len(reviews)),
    }


def _candidate_rows(context: TurnContext, candidates: Sequence[CandidateRecord]) -> list[Candidate]:
    return [
        Candidate(
            conversation_id=context.conversation_id,
            turn_index=context.turn_index,
            member=c.member,
            text=c.text,
            error=c.error,
            seconds=c.seconds,
        )
        for c in candidates
    ]


def _review_rows(context: TurnContext, reviews: Sequence[ReviewRecord]) -> list[Review]:
    return [
        Review(
            conversation_id=context.conversation_id,
            turn_index=context.turn_index,
            reviewer=r.reviewer,
            method=r.method,
            status=r.status,
            ranking=list(r.ranking),
            shown_order=list(r.shown_order),
            seed=r.seed,
            raw=r.raw,
            error=r.error,
            seconds=r.seconds,
        )
        for r in reviews
    ]


def _send_next_turn(
    app: Celery,
    session: Session,
    context: TurnContext,
    answer: str,
    *,
    created: bool,
    mode: str,
    policy: str,
    options: dict[str, Any],
) -> None:
    """Send turn t+1, which sees this turn's blended answer; once, even if this task is redelivered."""
    following = context.turn_index + 1
    key = {"conversation_id": context.conversation_id}
    if not created and crud.get_result(session=session, turn_index=following, **key) is not None:
        return  # a redelivery: the next turn was sent (and finished) already
    question = crud.get_question(session=session, turn_index=following, **key)
    if question is None:
        raise RuntimeError(f"conversation {context.conversation_id} has no question {following}")
    next_context = replace(
        context,
        turn_index=following,
        question=question,
        enqueued_at=time.time(),
        history=(*context.history, Exchange(context.question, answer)),
    )
    plan = plan_turn(runtime_of(app).committee, next_context, mode=mode, policy=policy)  # type: ignore[arg-type]
    turn_signature(plan, app=app, options=options).apply_async()


def _outcome(row: Any) -> dict[str, Any]:
    return {
        "conversation_id": row.conversation_id,
        "turn_index": row.turn_index,
        "answer": row.answer,
        "chosen": row.chosen,
        "status": row.status,
        "ranking": row.ranking,
        "scores": row.scores,
        "timings": row.timings,
    }
