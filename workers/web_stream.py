"""A running turn's stages as server-sent events, for the conversation page's script.

    GET /conversations/{id}/turns/{index}/events     text/event-stream; index from 0

Events, in the order the tasks finished: ``candidate``, ``ballot`` or ``judgement`` (``data``:
``{"id", "kind", "member", "at", "record"}`` as ``workers.progress.events`` reads them; the
SSE ``id`` is the event's, so a reconnecting ``EventSource`` resumes after it via
``Last-Event-ID``), then one ``decision`` (answer, chosen, status, ranking, scores,
decided_by and the explanation's sentences) and the stream ends. A turn that is already
stored streams its events and its decision at once.

The generator never blocks the event loop: it sleeps with ``asyncio.sleep`` and reads the
database on the thread pool. It sends a comment line every ``HEARTBEAT_S`` (proxies drop
idle connections), stops when the client goes away, and after ``limit_s`` sends ``timeout``
and ends (the script then subscribes again), so a forgotten stream holds nothing for long.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from pipeline.explain import explain_turn
from pipeline.service.client import BlendClient

POLL_S = 0.25  # how often a stream re-reads the database
HEARTBEAT_S = 15.0
RETRY_MS = 2000  # how long a browser waits before reconnecting a dropped stream


def sse(kind: str | None, data: Any, *, event_id: int | None = None) -> str:
    """One server-sent event (``kind`` None: the default "message")."""
    lines = [f"event: {kind}"] if kind else []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, ensure_ascii=False)}")
    return "\n".join(lines) + "\n\n"


def last_event_id(request: Request) -> int:
    """The event a reconnecting browser saw last (0: from the start)."""
    given = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    return int(given) if given.isdigit() else 0


def turn_exists(client: BlendClient, conversation_id: str, turn_index: int) -> bool:
    return client.store.has_turn(conversation_id, turn_index)


def read_turn(
    client: BlendClient, conversation_id: str, turn_index: int, after: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(the turn's events after ``after``, its decision once stored) — one poll of a stream."""
    new = client.store.turn_events(conversation_id, turn_index, after=after)
    stored = client.store.turn_result(conversation_id, turn_index)
    return new, None if stored is None else decision_event(*stored)


def decision_event(result: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page needs to show the decision before it fetches the turn's full rendering."""
    decision = result.get("decision") or {}
    return {
        "answer": result.get("answer"),
        "chosen": result.get("chosen"),
        "status": result.get("status"),
        "ranking": result.get("ranking") or [],
        "scores": result.get("scores") or {},
        "ranked": bool(decision.get("ranked", bool(decision.get("reviewers")))),
        "decided_by": decision.get("decided_by"),
        "explanation": explain_turn(result, reviews),
        "total_s": (result.get("timings") or {}).get("total_s"),
    }


async def turn_stream(
    request: Request, client: BlendClient, conversation_id: str, turn_index: int, *, limit_s: float
) -> AsyncIterator[str]:
    """The turn's events as they are written, then its decision (see the module docstring)."""
    after = last_event_id(request)
    deadline = time.monotonic() + limit_s
    beat = time.monotonic()
    yield f"retry: {RETRY_MS}\n\n"
    while not await request.is_disconnected():
        new, decided = await run_in_threadpool(read_turn, client, conversation_id, turn_index, after)
        for event in new:
            after = event["id"]
            yield sse(event["kind"], event, event_id=event["id"])
        if decided is not None:
            yield sse("decision", decided)
            return
        now = time.monotonic()
        if now >= deadline:
            yield sse("timeout", {"after": after, "waited_s": limit_s})
            return
        if new:
            beat = now
        elif now - beat >= HEARTBEAT_S:  # a comment line: keeps proxies from closing an idle stream
            beat = now
            yield ": heartbeat\n\n"
        await asyncio.sleep(POLL_S)
