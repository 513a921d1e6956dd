"""Live conversations: ask the next question after reading the last blended answer.

    with workers.connect() as client:
        chat = client.start(passage=None, history=[("Who wrote Dune?", "Frank Herbert")])
        first = chat.ask("When was it published?", timeout=600)
        second = chat.ask("And its sequel?", timeout=600)

A live conversation is stored like a submitted one (so ``fetch``, ``show``, reports
and Flower see it), but it grows a turn per question: ``ask`` stores the question,
sends it as one start message (the worker that takes it decides the turn under the
conversation's policy, which sees an open-ended conversation: p1 ranks the
committee's first ``p1_live_rank_turns`` turns) and waits for it. Asking while the
previous turn still runs is refused (``InputError``): a turn needs the previous
blended answer. ``aask`` is the awaitable twin (it waits on a thread, never on the
event loop).

Each finished turn records the conversation's *fingerprint*, a hash of its settings
and every exchange so far, so that a chat request repeating those messages finds
the conversation and continues it (``find_by_messages``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import Session

from db import crud
from db.models import Conversation as ConversationRow
from db.models import Turn
from pipeline.context import Exchange
from pipeline.conversation import Conversation, Question
from pipeline.errors import InputError, TurnInProgress
from pipeline.plan import RunConfig
from pipeline.policy import check_policy
from pipeline.records import TurnContext

if TYPE_CHECKING:
    from pipeline.client import BlendClient, TurnOutcome

# Waiting for turns happens on threads; enough for many chats in flight at once.
_WAITERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="peerblend-ask")
T = TypeVar("T")


async def off_loop(call: Callable[[], T]) -> T:
    """``call()`` (which may wait for a turn for minutes) on the waiting threads, never on the event
    loop; asyncio's default executor has a handful of threads, meant for short calls."""
    return await asyncio.get_running_loop().run_in_executor(_WAITERS, call)


def fingerprint(committee: str, run: RunConfig, system: str | None, exchanges: Sequence[Exchange]) -> str:
    """A stable hash of a conversation's settings and its exchanges so far."""
    body = [
        committee,
        run.method,
        run.policy,
        run.top_k,
        system or "",
        [[e.question, e.answer] for e in exchanges],
    ]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


class LiveConversation:
    """A stored, open-ended conversation of ``client``; ``ask`` one question at a time."""

    def __init__(self, client: BlendClient, conversation_id: str) -> None:
        self.client = client
        self.conversation_id = conversation_id

    def ask(self, question: str, *, timeout: float | None = None) -> TurnOutcome:
        """Blend the answer to ``question`` (the turn sees every earlier blended answer)."""
        return self.wait(self.send(question), timeout=timeout)

    async def aask(self, question: str, *, timeout: float | None = None) -> TurnOutcome:
        """``ask`` for servers and notebooks: the event loop keeps running while the committee works."""
        return await off_loop(lambda: self.ask(question, timeout=timeout))

    def wait(self, turn_index: int, *, timeout: float | None = None) -> TurnOutcome:
        """Wait for a turn ``send`` sent; records the conversation's new fingerprint."""
        outcome = self.client.wait_turn(self.conversation_id, turn_index, timeout=timeout)
        self._remember()
        return outcome

    async def await_turn(self, turn_index: int, *, timeout: float | None = None) -> TurnOutcome:
        """``wait`` without blocking the event loop."""
        return await off_loop(lambda: self.wait(turn_index, timeout=timeout))

    def send(self, question: str) -> int:
        """Store ``question`` as the next turn and send it; its turn index. Does not wait."""
        client = self.client
        if not isinstance(question, str):
            raise InputError(f"a question must be a string, got {type(question).__name__}")
        client.check_queues()
        with Session(client.engine, expire_on_commit=False) as session:
            row = crud.get_conversation(session=session, conversation_id=self.conversation_id)
            if row is None or not row.live:
                raise InputError(f"no live conversation with id {self.conversation_id!r}")
            results = crud.list_results(session=session, conversation_id=self.conversation_id)
            turns = crud.list_turns(session=session, conversation_id=self.conversation_id)
            if len(results) < len(turns):
                raise TurnInProgress(
                    f"turn {len(turns) - 1} of conversation {self.conversation_id} is still running; "
                    "ask the next question once it has an answer"
                )
            client.limits.check(
                Conversation(tuple(Question(t.question) for t in turns) + (Question(question.strip()),))
            )
            index = len(turns)
            if not crud.append_live_turn(session=session, conversation=row, question=question.strip()):
                raise TurnInProgress(
                    f"another question was asked in conversation {self.conversation_id} at the same time"
                )
        run = RunConfig(method=row.method, policy=check_policy(row.policy), top_k=row.top_k, live=True)
        context = TurnContext(
            conversation_id=self.conversation_id,
            turn_index=index,
            question=question.strip(),
            n_turns=index + 1,
            history=_exchanges(row, turns, results),
            passage=row.passage,
            enqueued_at=time.time(),
            system=row.system,
        )
        client.send_turn(context, run)  # a worker decides it under the conversation's policy state
        return index

    def _remember(self) -> None:
        """Record the fingerprint of every exchange so far (after a turn is stored)."""
        with Session(self.client.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=self.conversation_id)
            if row is None:
                return
            turns = crud.list_turns(session=session, conversation_id=self.conversation_id)
            results = crud.list_results(session=session, conversation_id=self.conversation_id)
            if len(results) < len(turns):
                return
            run = RunConfig(method=row.method, policy=check_policy(row.policy), top_k=row.top_k, live=True)
            done = fingerprint(row.committee, run, row.system, _exchanges(row, turns, results))
            crud.set_fingerprint(session=session, conversation=row, fingerprint=done)


def _exchanges(row: ConversationRow, turns: Sequence[Turn], results: Sequence[Any]) -> tuple[Exchange, ...]:
    """The exchanges before the next turn: the given history, then each stored turn's blended answer."""
    answers = {r.turn_index: r.answer for r in results}
    given = tuple(Exchange(q, a) for q, a in row.history)
    return given + tuple(
        Exchange(t.question, answers[t.turn_index]) for t in turns if t.turn_index in answers
    )


def find_by_messages(
    client: BlendClient, run: RunConfig, system: str | None, exchanges: Sequence[Exchange]
) -> str | None:
    """The id of a live conversation whose settings and exchanges so far equal these, if any (newest)."""
    wanted = fingerprint(client.committee.name, run, system, exchanges)
    with Session(client.engine) as session:
        return crud.find_live_conversation(session=session, fingerprint=wanted)
