"""Finishing a turn: rank, fuse if asked, store once, fold into the policy, send the next turn."""

from __future__ import annotations

import json
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
from pipeline.aggregate import Decision, decide, decide_pairwise, top_k_texts
from pipeline.borda import Ballot
from pipeline.canvas import turn_signature
from pipeline.context import Exchange
from pipeline.pairwise import Judgement
from pipeline.plan import RunConfig, TurnPlan
from pipeline.policy import TurnDecision, calibration_key, trust_key
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.shortlist import advance
from pipeline.stages import fuse
from pipeline.weights import add_agreement, consensus_agreement, trust_weights
from workers.runtime import Runtime, runtime_of

log = logging.getLogger(__name__)


def finish_turn(
    app: Celery,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    judgements: Sequence[Judgement],
    *,
    run: RunConfig,
    decision: TurnDecision,
) -> dict[str, Any]:
    runtime = runtime_of(app)
    committee = runtime.committee
    order = [
        *decision.preference,
        *(m.name for m in runtime.committee.members if m.name not in decision.preference),
    ]
    weights, weights_note = _reviewer_weights(runtime, reviews)
    if run.method == "pairwise" and decision.ranked:
        ranked = decide_pairwise(candidates, judgements, committee_order=order)
    else:
        ranked = decide(
            candidates,
            reviews,
            committee_order=order,
            weights=weights,
            exclude_self=committee.exclude_self_votes,
        )
    ranked_at = time.time()
    answer, chosen, status, fusion_error = _select_or_fuse(runtime, context, candidates, ranked, run)
    result = TurnResultBase(
        conversation_id=context.conversation_id,
        turn_index=context.turn_index,
        answer=answer,
        chosen=chosen,
        status=status,
        method=run.method,
        policy=run.policy,
        ranking=list(ranked.ranking),
        scores=ranked.scores,
        timings=_timings(context, candidates, [*reviews, *judgements], ranked_at),
        decision={
            **decision.to_json(),
            "top_k": run.top_k,
            "excluded_failed": ranked.excluded,
            "ballots": ranked.ballots_used,
            "ranking_status": ranked.status,
            "fusion_error": fusion_error,
            "weights": weights or {},
            "weights_note": weights_note,
        },
    )
    reviewer_rows = _review_rows(context, reviews) + _judgement_rows(context, judgements)
    with Session(get_engine(runtime.settings.database), expire_on_commit=False) as session:
        stored, created = crud.save_turn(
            session=session,
            result=result,
            candidates=_candidate_rows(context, candidates),
            reviews=reviewer_rows,
        )
        if not created:
            log.info(
                "turn %s/%s was stored before; not written again", context.conversation_id, context.turn_index
            )
        elif committee.reviewer_weights == "online" and reviews:
            _learn_trust(runtime, reviews, ranked.ranking)
        following = advance(
            runtime.policy_store,
            committee,
            run,
            decision,
            conversation_id=context.conversation_id,
            turn_index=context.turn_index,
            n_turns=context.n_turns,
            ranking=stored.ranking,
            scores=stored.scores,
            ballots=int(stored.decision.get("ballots", 0)),
        )
        if following is not None:
            _send_next_turn(app, session, context, stored.answer, following, run=run, created=created)
    return _outcome(stored)


def _reviewer_weights(
    runtime: Runtime, reviews: Sequence[ReviewRecord]
) -> tuple[dict[str, float] | None, str]:
    """The Borda weight of each reviewer this turn (None: uniform), and how they were chosen."""
    committee = runtime.committee
    if committee.reviewer_weights == "uniform" or not reviews:
        return None, "uniform"
    store = runtime.policy_store
    if committee.reviewer_weights == "online":
        stats = store.get(trust_key(committee.name)) or {}
        return trust_weights(stats, [r.reviewer for r in reviews]), "online trust"
    calibrated = store.get(calibration_key(committee.name))
    if not calibrated:
        return None, "calibrated weights requested but none stored (run `peerblend calibrate`): uniform"
    return {r.reviewer: float(calibrated.get(r.reviewer, 0.0)) for r in reviews}, "calibrated trust"


def _learn_trust(runtime: Runtime, reviews: Sequence[ReviewRecord], pool: Sequence[str]) -> None:
    """Fold this turn's agreement of each reviewer with the others into the committee's trust."""
    ballots = [Ballot(r.reviewer, r.ranking) for r in reviews if r.ranking]
    agreement = consensus_agreement(ballots, list(pool))
    if agreement:
        runtime.policy_store.update(
            trust_key(runtime.committee.name), lambda v: add_agreement(v or {}, agreement)
        )


def _select_or_fuse(
    runtime: Runtime,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
    ranked: Decision,
    run: RunConfig,
) -> tuple[str, str | None, str, str | None]:
    """(answer, chosen member or None, status, fusion error or None)."""
    if ranked.chosen is None:
        return "", None, ranked.status, None
    best = top_k_texts(ranked, candidates, 1)[0]
    if not run.fuses:
        return best, ranked.chosen, ranked.status, None
    committee = runtime.committee
    aggregator = committee.member(committee.aggregator or "")
    texts = top_k_texts(ranked, candidates, run.top_k)
    try:
        fused = fuse(runtime.backend(aggregator), aggregator, committee, context, texts)
    except Exception as error:  # noqa: BLE001 - fall back to the top candidate, recorded
        log.warning("fusion by %s failed: %s", aggregator.name, error)
        return best, ranked.chosen, "fusion_failed", f"{type(error).__name__}: {error}"[:500]
    if not fused:
        return best, ranked.chosen, "fusion_failed", "empty fused answer"
    return fused, None, "fused", None


def _timings(
    context: TurnContext, candidates: Sequence[CandidateRecord], reviews: Sequence[Any], ranked_at: float
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


def _judgement_rows(context: TurnContext, judgements: Sequence[Judgement]) -> list[Review]:
    """All of a turn's pairwise judgements as one review row of the judge (raw: the matrix)."""
    if not judgements:
        return []
    matrix = [
        {"first": j.first, "second": j.second, "p_first": j.p_first, "error": j.error} for j in judgements
    ]
    judged = [j for j in judgements if j.p_first is not None]
    return [
        Review(
            conversation_id=context.conversation_id,
            turn_index=context.turn_index,
            reviewer=judgements[0].judge,
            method="pairwise",
            status="scored" if judged else "error",
            raw=json.dumps(matrix),
            seconds=sum(j.seconds for j in judgements),
            error=None if judged else "no pair could be judged",
        )
    ]


def _send_next_turn(
    app: Celery,
    session: Session,
    context: TurnContext,
    answer: str,
    decision: TurnDecision,
    *,
    run: RunConfig,
    created: bool,
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
    turn_signature(TurnPlan(next_context, run, decision), app=app).apply_async()


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
