"""The raw floor: a no-op Celery canvas of a turn's shape, with peerblend's Celery settings.

    chain(group(5 x gen), chord(group(5 x review), aggregate))

``start`` sends the same canvas from a worker, as peerblend sends a first turn (a client's
start message, which a worker turns into the canvas): the Celery cost of that design. With
``routed``, each member's tasks go to the member's own queue (``ROUTED.m<i>``) and the rest to
``ROUTED``, as peerblend routes them; a worker then takes tasks from six queues, not one.

Its own app and queues on the same Redis; started as real workers by ``cluster.py``.
"""

from __future__ import annotations

import os

from celery import Celery, chain, chord, group

REDIS = os.environ.get("PEERBLEND_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RAW_QUEUE", "raw-bench")
ROUTED = f"{QUEUE}-routed"

app = Celery("raw", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)


@app.task(name="raw.gen")
def gen(member: int) -> dict:
    return {"member": member, "text": "answer"}


@app.task(name="raw.review")
def review(candidates: list, reviewer: int) -> dict:
    return {"reviewer": reviewer, "ranking": [c["member"] for c in candidates]}


@app.task(name="raw.aggregate")
def aggregate(reviews: list) -> dict:
    return {"answer": "answer", "ballots": len(reviews)}


@app.task(name="raw.start", ignore_result=True)
def start(final_id: str, routed: bool = False) -> None:
    turn(final_id=final_id, routed=routed).apply_async(add_to_parent=False)


def member_queues(n: int = 5) -> list[str]:
    return [f"{ROUTED}.m{i}" for i in range(n)]


def send_start(final_id: str, *, routed: bool = False) -> None:
    start.apply_async((final_id, routed), queue=ROUTED if routed else QUEUE)


def turn(n: int = 5, final_id: str | None = None, routed: bool = False):
    queues = member_queues(n) if routed else [QUEUE] * n
    body = aggregate.s().set(queue=ROUTED if routed else QUEUE)
    if final_id is not None:
        body = body.set(task_id=final_id)
    return chain(
        group(gen.si(i).set(queue=queues[i]) for i in range(n)),
        chord(group(review.s(reviewer=i).set(queue=queues[i]) for i in range(n)), body),
    )
