"""The rows a finished turn stores, built from the records its tasks returned.

In workers/, where the method's records meet the tables: db/ imports nothing from pipeline/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from db.models import Candidate, Review, TurnResultBase
from pipeline.pairwise import Judgement
from pipeline.plan import RunConfig
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
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


def review_rows(context: TurnContext, reviews: Sequence[ReviewRecord]) -> list[Review]:
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
            voters=list(r.voters),
        )
        for r in reviews
    ]


def judgement_rows(context: TurnContext, judgements: Sequence[Judgement]) -> list[Review]:
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
