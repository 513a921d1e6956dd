"""Replaying datasets as queued jobs: resumable, a bounded number of conversations in flight.

Every conversation of the run is stored with the run's name. Rerunning the same
run skips finished conversations and resumes unfinished ones at their first
missing turn; a turn is stored in one transaction, so an interruption leaves
whole turns or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import OperationalError

from pipeline.conversation import Conversation
from pipeline.errors import InputError
from pipeline.evaluation.datasets import dataset_of, load_conversations
from pipeline.plan import RunConfig, check_run, check_run_name
from pipeline.service.canvas import final_task_id
from pipeline.service.client import BlendClient, BlendHandle
from workers.services import reason


@dataclass
class ReplaySummary:
    submitted: int = 0
    resumed: int = 0
    skipped: int = 0  # finished before this replay started
    failed: int = 0
    turns_done: int = 0
    turns_total: int = 0
    seconds: float = 0.0


@dataclass
class _InFlight:
    handle: BlendHandle
    next_turn: int
    waiting_since: float  # time.monotonic() when its current turn began to be awaited


def load_all(files: Sequence[Path], limit: int | None, stride: int = 1, start: int = 0) -> list[Conversation]:
    """Every ``stride``-th conversation of each file from its ``start``-th (0-based), at most
    ``limit`` per file.

    All files load (or raise DatasetError) before anything is enqueued.
    """
    if stride < 1:
        raise InputError(f"--stride must be at least 1, got {stride}")
    if start < 0:
        raise InputError(f"--start must be at least 0, got {start}")
    if stride == 1 and start == 0:
        return [c for path in files for c in load_conversations(path, limit=limit)]
    return [c for path in files for c in load_conversations(path)[start::stride][:limit]]


_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("turns"),
    TextColumn("{task.fields[rate]:.2f}/s"),
    TimeRemainingColumn(),
)


def replay(
    client: BlendClient,
    conversations: Sequence[Conversation],
    *,
    run: str,
    method: str,
    policy: str,
    top_k: int | None,
    concurrency: int,
    console: Console,
    turn_timeout_s: float = float("inf"),
) -> ReplaySummary:
    """Replay ``conversations`` under ``run``, ``concurrency`` at a time.

    A turn not stored ``turn_timeout_s`` after the replay began to wait for it counts
    as failed (its conversation is left; rerunning the run resumes it).
    """
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}")
    run = check_run_name(run) or ""
    if not run:
        raise InputError("a replay needs a run name")
    config = check_run(client.committee, method=method, policy=policy, top_k=top_k)
    summary = ReplaySummary(turns_total=sum(len(c.questions) for c in conversations))
    pending, done_turns = _pending(client, conversations, run, config, summary)
    started = time.monotonic()
    with Progress(*_COLUMNS, console=console) as progress:
        bar = progress.add_task(
            f"replay {run}", total=summary.turns_total, completed=summary.turns_done, rate=0.0
        )
        in_flight: list[_InFlight] = []
        fresh = 0
        while pending or in_flight:
            while pending and len(in_flight) < concurrency:
                in_flight.append(_start(client, pending.pop(0), run, config, summary, done_turns))
            try:
                finished = _poll(client, in_flight, summary, turn_timeout_s)
            except OperationalError as error:  # the database blinked: the workers retry, so wait too
                progress.console.print(f"database unreachable, still waiting: {reason(error)}")
                time.sleep(1.0)
                continue
            fresh += finished
            if finished:
                summary.turns_done += finished
                elapsed = max(time.monotonic() - started, 1e-9)
                progress.update(bar, completed=summary.turns_done, rate=fresh / elapsed)
            else:
                time.sleep(0.05)
    summary.seconds = time.monotonic() - started
    return summary


def _start(
    client: BlendClient,
    item: Conversation | str,
    run: str,
    config: RunConfig,
    summary: ReplaySummary,
    done_turns: dict[str, int],
) -> _InFlight:
    """Submit a new conversation, or resume a stored unfinished one (by id)."""
    if isinstance(item, str):
        summary.resumed += 1
        return _InFlight(client.resume(item), done_turns[item], time.monotonic())
    handle = client.submit(item, method=config.method, policy=config.policy, top_k=config.top_k, run=run)
    summary.submitted += 1
    return _InFlight(handle, 0, time.monotonic())


def _pending(
    client: BlendClient,
    conversations: Sequence[Conversation],
    run: str,
    config: RunConfig,
    summary: ReplaySummary,
) -> tuple[list[Conversation | str], dict[str, int]]:
    """What is left to do: new conversations, or ids of unfinished stored ones; and turns stored per id.

    Counts the finished ones as skipped and their stored turns as done.
    """
    counted = client.store.run_conversations(run)
    stored = [row for row, _ in counted]
    done_turns = {row.id: n for row, n in counted}
    for row in stored:
        if (row.method, row.policy, row.top_k) != (config.method, config.policy, config.top_k):
            raise InputError(
                f"run {run!r} was made with method {row.method}, policy {row.policy}, top_k {row.top_k}; "
                "use another run name for other settings"
            )
    # By dataset, not source: runs stored before sources named their domain still resume.
    by_key = {(dataset_of(row.source), row.external_id): row for row in stored}
    pending: list[Conversation | str] = []
    for conversation in conversations:
        found = by_key.get((dataset_of(conversation.source), conversation.id))
        if found is None:
            pending.append(conversation)
        elif done_turns[found.id] < found.n_turns:
            pending.append(found.id)
        else:
            summary.skipped += 1
        summary.turns_done += 0 if found is None else done_turns[found.id]
    return pending, done_turns


def _poll(client: BlendClient, in_flight: list[_InFlight], summary: ReplaySummary, timeout_s: float) -> int:
    """Advance every conversation whose next turn has finished; the number of turns that did.

    The database has the last word: a turn counts as failed only if its current
    attempt's task failed and the turn is still not stored.
    """
    finished = 0
    for item in list(in_flight):
        conversation_id = item.handle.conversation_id
        while item.next_turn < item.handle.n_turns:
            state = client.store.progress(conversation_id, item.next_turn)
            if isinstance(state, int):
                if time.monotonic() - item.waiting_since > timeout_s:
                    summary.failed += 1  # gave up waiting: rerunning the run resumes it
                    in_flight.remove(item)
                    break
                result = client.app.AsyncResult(final_task_id(conversation_id, item.next_turn, max(state, 1)))
                if not (result.ready() and result.failed()):
                    break
                if client.store.progress(conversation_id, item.next_turn) == state:
                    summary.failed += 1
                    in_flight.remove(item)
                    break
                continue  # stored or resent meanwhile: look again
            item.next_turn += 1
            item.waiting_since = time.monotonic()
            finished += 1
        else:
            in_flight.remove(item)
    return finished
