"""The Celery canvas of one turn, built from task *names* (never importing workers/).

    chain(group(generate per member), chord(group(review per reviewer), aggregate))

A turn without a review stage is ``chain(group(generate ...), aggregate)``. The
aggregate task of turn t sends the canvas of turn t+1, so turn t+1 sees turn t's
blended answer. Every aggregate task gets a predictable id (``final_task_id``)
so a client can wait for each turn without knowing when it was sent.

Queues are not chosen here: the app's router maps the ``member``, ``reviewer``
or ``aggregator`` kwarg to that member's queue (``workers.app``).
"""

from __future__ import annotations

from typing import Any

from celery import chain, chord, group, signature
from celery.canvas import Signature

from pipeline.plan import TurnPlan

GENERATE = "workers.generate"
REVIEW = "workers.review"
AGGREGATE = "workers.aggregate"


def final_task_id(conversation_id: str, turn_index: int) -> str:
    """The id of the task whose result is turn ``turn_index``'s outcome."""
    return f"peerblend-{conversation_id}-turn-{turn_index}"


def turn_signature(plan: TurnPlan, *, app: Any, options: dict[str, Any] | None = None) -> Signature:
    """The canvas of one turn, bound to ``app``; ``options`` go to the aggregate task."""
    context = plan.context.to_json()
    generate = group(
        [
            signature(GENERATE, kwargs={"turn": context, "member": m}, immutable=True, app=app)
            for m in plan.generators
        ],
        app=app,
    )
    aggregate_kwargs: dict[str, Any] = {
        "turn": context,
        "mode": plan.mode,
        "policy": plan.policy,
        "options": options or {},
    }
    aggregate = signature(AGGREGATE, kwargs=aggregate_kwargs, app=app).set(
        task_id=final_task_id(plan.context.conversation_id, plan.context.turn_index)
    )
    if not plan.reviewers:
        return chain(generate, aggregate, app=app)
    review = group(
        [signature(REVIEW, kwargs={"turn": context, "reviewer": r}, app=app) for r in plan.reviewers],
        app=app,
    )
    return chain(generate, chord(review, aggregate, app=app), app=app)
