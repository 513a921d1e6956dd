"""The rows a finished turn stores, built from the records its tasks returned.

In workers/, where the method's records meet the tables: db/ imports nothing from pipeline/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from db.models import Candidate, Review, TurnResultBase
from pipeline.plan import RunConfig
from pipeline.records import CandidateRecord, TurnContext
from pipeline.verdict import Verdict


def candidate_rows(context: TurnContext, candidates: Sequence[CandidateRecord]) -> list[Candidate]:
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


def review_rows(context: TurnContext, stored: Sequence[Mapping[str, Any]]) -> list[Review]:
    """The turn's review rows, from the fields its method stores (``Method.stored_reviews``)."""
    return [
        Review(conversation_id=context.conversation_id, turn_index=context.turn_index, **s) for s in stored
    ]


def result_row(
    context: TurnContext, verdict: Verdict, run: RunConfig, *, timings: dict[str, float]
) -> TurnResultBase:
    """The turn's result row: the verdict's answer, ranking, scores and decision record."""
    return TurnResultBase(
        conversation_id=context.conversation_id,
        turn_index=context.turn_index,
        answer=verdict.answer,
        chosen=verdict.chosen,
        status=verdict.status,
        method=run.method,
        policy=run.policy,
        ranking=list(verdict.ranked.ranking),
        scores=verdict.ranked.scores,
        timings=timings,
        decision=verdict.record,
    )
