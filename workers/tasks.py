"""The tasks of a turn. Thin: decode JSON, call pipeline/ and a backend, store, return.

No task of the canvas raises out of its body: a failure becomes a record (see
pipeline.stages), because a raising chord header leaves the turn pending forever.
Every model call is bounded by its member's ``timeout_s`` (``workers.deadline``):
a late member is recorded as a timeout and the turn goes on without it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from celery import Celery, Task, shared_task

from pipeline.method import StageRecords, candidates_from
from pipeline.pairwise import judge as stage_judge
from pipeline.plan import RunConfig
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, Judgement, ReviewRecord, TurnContext
from pipeline.stages import answer, review
from pipeline.usage import Metered, metered_record
from pipeline.verdict import TurnInputs
from workers.deadline import Timeout, call_with_deadline
from workers.dispatch import start_turn
from workers.progress import record_event
from workers.runtime import Runtime, runtime_of
from workers.turn import finish_turn

# How much of a record Celery writes in its logs and events (it reprs every return value, even
# when nothing logs it: a review record with every candidate took 0.4 ms at Celery's 1,024).
SHOWN_RESULT = 200


def _items(results: Any) -> list[dict[str, Any]]:
    # A one-task group is unrolled by Celery into a plain task: one dict, not a list.
    return [results] if isinstance(results, dict) else list(results or [])


def _candidates_from(results: Any) -> list[CandidateRecord]:
    return candidates_from(_items(results))


def _read_results(items: list[dict[str, Any]], run: RunConfig, roles: TurnRoles) -> StageRecords:
    """What the stage before the aggregate returned: a reviewed turn's review stage, as its method
    reads it (``Method.read``), or else the candidates."""
    return run.variant.read(items) if roles.ranked else (candidates_from(items), [], [])


@shared_task(name="workers.start_turn", bind=True, ignore_result=True)
def start_turn_task(self: Task, *, plan: dict[str, Any]) -> None:
    """A client's start message: decide the turn and apply its canvas, once per attempt."""
    start_turn(self.app, TurnContext.from_json(plan["turn"]), RunConfig.from_json(plan["run"]))


@shared_task(name="workers.generate", bind=True, resultrepr_maxsize=SHOWN_RESULT)
def generate(self: Task, *, turn: dict[str, Any], member: str) -> dict[str, Any]:
    runtime = runtime_of(self.app)
    context = TurnContext.from_json(turn)
    result = _generate(runtime, context, member).to_json()
    record_event(runtime, context, "candidate", member, result)
    return result


def _generate(runtime: Runtime, context: TurnContext, member: str) -> CandidateRecord:
    config = runtime.committee.member(member)
    try:
        backend = runtime.backend(config)
    except Exception as error:  # noqa: BLE001 - a member that cannot load is excluded, recorded
        return CandidateRecord(member, error=f"{type(error).__name__}: {error}"[:500])
    metered = Metered(backend)
    try:
        record = call_with_deadline(
            f"generate[{member}]",
            runtime.timeout_s(config),
            lambda: answer(metered, config, runtime.committee, context),
        )
    except Timeout as late:
        record = CandidateRecord(member, error=str(late), seconds=late.timeout_s, finished_at=time.time())
    return metered_record(record, metered)


@shared_task(name="workers.review", bind=True, resultrepr_maxsize=SHOWN_RESULT)
def review_task(
    self: Task, candidates: Any, *, turn: dict[str, Any], reviewer: str, voters: list[str] | None = None
) -> dict[str, Any]:
    """``reviewer``'s ballot, cast for ``voters`` (its voter group, ``reviewer`` first; None: alone)."""
    record = _review(self.app, candidates, turn=turn, reviewer=reviewer)
    result = replace(record, voters=tuple(voters or ())).to_json()
    record_event(runtime_of(self.app), TurnContext.from_json(turn), "ballot", reviewer, result)
    return result


def _review(app: Celery, candidates: Any, *, turn: dict[str, Any], reviewer: str) -> ReviewRecord:
    runtime = runtime_of(app)
    config = runtime.committee.member(reviewer)
    context = TurnContext.from_json(turn)
    pool = _candidates_from(candidates)
    try:
        backend = runtime.backend(config)
    except Exception as error:  # noqa: BLE001
        message = f"{type(error).__name__}: {error}"[:500]
        return ReviewRecord(reviewer, config.review_method, "error", error=message, candidates=tuple(pool))
    metered = Metered(backend)
    try:
        record = call_with_deadline(
            f"review[{reviewer}]",
            runtime.timeout_s(config),
            lambda: review(metered, config, runtime.committee, context, pool),
        )
    except Timeout as late:
        record = ReviewRecord(
            reviewer,
            config.review_method,
            "timeout",
            error=str(late),
            seconds=late.timeout_s,
            finished_at=time.time(),
            candidates=tuple(pool),
        )
    return metered_record(record, metered)


@shared_task(name="workers.judge", bind=True, resultrepr_maxsize=SHOWN_RESULT)
def judge_task(
    self: Task, candidates: Any, *, turn: dict[str, Any], judge: str, pair: list[str]
) -> dict[str, Any]:
    runtime = runtime_of(self.app)
    config = runtime.committee.member(judge)
    pool = _candidates_from(candidates)
    first, second = pair
    try:
        backend = runtime.backend(config)
    except Exception as error:  # noqa: BLE001
        message = f"{type(error).__name__}: {error}"[:500]
        return Judgement(judge, first, second, error=message, candidates=tuple(pool)).to_json()
    context = TurnContext.from_json(turn)
    metered = Metered(backend)
    try:
        record = call_with_deadline(
            f"judge[{judge}]",
            runtime.timeout_s(config),
            lambda: stage_judge(metered, config, runtime.committee, context, pool, (first, second)),
        )
    except Timeout as late:
        record = Judgement(
            judge,
            first,
            second,
            error=str(late),
            seconds=late.timeout_s,
            finished_at=time.time(),
            candidates=tuple(pool),
        )
    result = metered_record(record, metered).to_json()
    record_event(runtime, context, "judgement", judge, result)
    return result


@shared_task(name="workers.aggregate", bind=True)
def aggregate(
    self: Task, results: Any, *, turn: dict[str, Any], run: dict[str, Any], decision: dict[str, Any]
) -> dict[str, Any]:
    """The turn's verdict and its storing; ``decision``: the turn's roles (its wire name, kept for
    messages already queued)."""
    context, config, roles = (
        TurnContext.from_json(turn),
        RunConfig.from_json(run),
        TurnRoles.from_json(decision),
    )
    candidates, reviews, judgements = _read_results(_items(results), config, roles)
    return finish_turn(self.app, TurnInputs(context, config, roles, candidates, reviews, judgements))
