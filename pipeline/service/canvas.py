"""The Celery canvas of one turn, built from task *names* (never importing workers/).

    chain(group(generate per member), chord(group(review per voter group), aggregate))

The chord's header is the review stage its method declares (``Method.review_tasks``: a peer
turn's one review per voter group, a pairwise turn's one judge task per ordered pair); a turn
without a review stage is ``chain(group(generate ...), aggregate)``. The
aggregate task of turn t sends the canvas of turn t+1, so turn t+1 sees turn t's
blended answer. Every aggregate task gets a predictable id (``final_task_id``, per
attempt: recovery sends a stalled turn again as a new attempt) so a client can
wait for each turn without knowing when it was sent.

A client does not publish a canvas: it sends one small start message
(``start_signature``, to the default queue), and the worker that takes it decides the
turn under the conversation's policy and applies the canvas. Publishing a canvas costs
a dozen messages and a chord set-up; a start message costs one, so a client submits
many conversations a second and keeps no result subscriptions for tasks it never
waits on.

Queues are not chosen here: the app's router (``workers.app``) sends each task to
the queue of the member ``task_member`` names (a method's review task says which kwarg names
it; a fusing turn's aggregate goes to the aggregator: ``pipeline.fusion``).
"""

from __future__ import annotations

from typing import Any

from celery import chain, chord, group, signature
from celery.canvas import Signature

from pipeline import fusion
from pipeline.committee import Committee
from pipeline.plan import VARIANTS, RunConfig, TurnPlan
from pipeline.records import TurnContext

START_TURN = "workers.start_turn"
GENERATE = "workers.generate"
AGGREGATE = "workers.aggregate"
CANDIDATES = "(the turn's candidates)"  # what a review or judge task receives, as logs show it
# The kwargs that name a review stage's member, one per method with a review stage.
QUEUE_KWARGS = tuple(m.queue_kwarg for m in VARIANTS.values() if m.queue_kwarg)


def final_task_id(conversation_id: str, turn_index: int, attempt: int = 1) -> str:
    """The id of the task whose result is the outcome of attempt ``attempt`` of turn ``turn_index``."""
    return f"peerblend-{conversation_id}-turn-{turn_index}-a{attempt}"


def start_signature(context: TurnContext, run: RunConfig, *, app: Any) -> Signature:
    """The start message of attempt ``context.attempt`` of a turn: a worker decides the turn and
    applies its canvas (``turn_signature``). No result is kept: a client waits on the aggregate."""
    plan = {"turn": context.to_json(), "run": run.to_json()}
    return signature(
        START_TURN,
        kwargs={"plan": plan},  # nested: the router sends it to the default queue
        immutable=True,
        app=app,
        ignore_result=True,
        **_shown("start", context, run),
    )


def turn_signature(plan: TurnPlan, *, app: Any) -> Signature:
    """The canvas of one turn, bound to ``app``.

    The answers and reviews reach the next stage through the chords; nobody fetches them
    by task id. Where the result backend hands each chord part to the chord itself
    (``stashes_chord_results``: peerblend's Redis backend), those tasks store no result
    of their own: ten fewer writes per turn. The aggregate's result is always kept: a
    client waits on it (``final_task_id``).
    """
    context = plan.context.to_json()
    unread = {"ignore_result": True} if getattr(app.backend, "stashes_chord_results", False) else {}
    generate = group(
        [
            signature(
                GENERATE,
                kwargs={"member": m, "turn": context},
                immutable=True,
                app=app,
                **unread,
                **_shown(f"generate[{m}]", plan.context, plan.run),
            )
            for m in plan.generators
        ],
        app=app,
    )
    # "decision" on the wire is the turn's roles: the name is kept for messages already queued.
    aggregate_kwargs = {"turn": context, "run": plan.run.to_json(), "decision": plan.roles.to_json()}
    received = "ballots" if plan.reviewers else "candidates"
    aggregate = signature(
        AGGREGATE,
        kwargs=aggregate_kwargs,
        app=app,
        **_shown("aggregate", plan.context, plan.run, args=f"(the turn's {received})"),
    ).set(task_id=final_task_id(plan.context.conversation_id, plan.context.turn_index, plan.context.attempt))
    if not plan.reviewers:
        return chain(generate, aggregate, app=app)
    header = [
        signature(
            task.task,
            kwargs={**task.kwargs, "turn": context},
            app=app,
            **unread,
            **_shown(task.shown, plan.context, plan.run, args=CANDIDATES),
        )
        for task in plan.run.variant.review_tasks(plan.generators, plan.reviews)
    ]
    return chain(generate, chord(group(header, app=app), aggregate, app=app), app=app)


def _shown(name: str, context: TurnContext, run: RunConfig, *, args: str = "()") -> dict[str, str]:
    """How a task appears in logs and Flower: stage and member as its name, a short kwargs line
    with the conversation, the turn (numbered from 1, as people count) and the question, and
    what its arguments are (the records of the stage before) instead of their text.

    (Celery cuts kwargs at 1,024 characters in events, which would hide the member
    behind a long passage; and it would walk every record a chord hands on to write
    their repr, a millisecond per turn.)
    """
    question = context.question if len(context.question) <= 80 else context.question[:77] + "..."
    where = f"conversation={context.conversation_id} turn={context.turn_index + 1}"  # numbered from 1
    line = f"{where} method={run.method} policy={run.policy} question={question!r}"
    return {"shadow": name, "kwargsrepr": line, "argsrepr": args}


def task_member(kwargs: dict[str, Any], committee: Committee) -> str | None:
    """The member whose queue a task goes to, from its kwargs; None for the default queue."""
    member = kwargs.get("member")  # a generate task
    for key in QUEUE_KWARGS:  # a review stage's task
        member = member or kwargs.get(key)
    if member is None and "run" in kwargs:  # a turn's aggregate task
        member = fusion.aggregate_member(committee, fuses=RunConfig.from_json(kwargs["run"]).fuses)
    return member
