"""The raw floor: a no-op Celery canvas of a turn's shape, with peerblend's Celery settings.

    chain(group(5 x gen), chord(group(5 x review), aggregate))

``start`` sends the same canvas from a worker, as peerblend sends a first turn (a client's
start message, which a worker turns into the canvas): the Celery cost of that design.

Its own app and queue on the same Redis; started as a real worker by bench_overhead.py.
"""

from __future__ import annotations

import os

from celery import Celery, chain, chord, group

REDIS = os.environ.get("PEERBLEND_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RAW_QUEUE", "raw-bench")

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
def start(final_id: str) -> None:
    turn(final_id=final_id).apply_async(add_to_parent=False)


def turn(n: int = 5, final_id: str | None = None):
    body = aggregate.s() if final_id is None else aggregate.s().set(task_id=final_id)
    return chain(
        group(gen.si(i) for i in range(n)), chord(group(review.s(reviewer=i) for i in range(n)), body)
    )
