"""The tasks of a turn. Thin: decode JSON, call pipeline/ and a backend, store, return.

No task of the canvas raises out of its body: a failure becomes a record (see
pipeline.stages), because a raising chord header leaves the turn pending forever.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.stages import answer, review
from workers.runtime import runtime_of
from workers.turn import finish_turn


def _candidates_from(results: Any) -> list[CandidateRecord]:
    # A one-task group is unrolled by Celery into a plain task: one dict, not a list.
    items = [results] if isinstance(results, dict) else list(results or [])
    return [CandidateRecord.from_json(item) for item in items]


@shared_task(name="workers.generate", bind=True)
def generate(self: Task, *, turn: dict[str, Any], member: str) -> dict[str, Any]:
    runtime = runtime_of(self.app)
    config = runtime.committee.member(member)
    context = TurnContext.from_json(turn)
    try:
        backend = runtime.backend(config)
    except Exception as error:  # noqa: BLE001 - a member that cannot load is excluded, recorded
        return CandidateRecord(member, error=f"{type(error).__name__}: {error}"[:500]).to_json()
    return answer(backend, config, runtime.committee, context).to_json()


@shared_task(name="workers.review", bind=True)
def review_task(self: Task, candidates: Any, *, turn: dict[str, Any], reviewer: str) -> dict[str, Any]:
    runtime = runtime_of(self.app)
    config = runtime.committee.member(reviewer)
    context = TurnContext.from_json(turn)
    pool = _candidates_from(candidates)
    try:
        backend = runtime.backend(config)
    except Exception as error:  # noqa: BLE001
        message = f"{type(error).__name__}: {error}"[:500]
        return ReviewRecord(
            reviewer, config.review_method, "error", error=message, candidates=tuple(pool)
        ).to_json()
    return review(backend, config, runtime.committee, context, pool).to_json()


@shared_task(name="workers.aggregate", bind=True)
def aggregate(
    self: Task, results: Any, *, turn: dict[str, Any], mode: str, policy: str, options: dict[str, Any]
) -> dict[str, Any]:
    items = [results] if isinstance(results, dict) else list(results or [])
    if items and "reviewer" in items[0]:
        reviews = [ReviewRecord.from_json(item) for item in items]
        candidates = list(reviews[0].candidates)
    else:
        reviews, candidates = [], _candidates_from(items)
    return finish_turn(
        self.app, TurnContext.from_json(turn), candidates, reviews, mode=mode, policy=policy, options=options
    )
