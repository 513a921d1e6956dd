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

The worker that stores a turn records the conversation's *fingerprint*, a hash of its
settings and every exchange so far, in the same commit, so that a chat request repeating
those messages finds the conversation and continues it (``find_by_messages``) whatever
became of the process that asked. Each turn keeps the fingerprint it was asked under, so
a retried request (same messages, same question) finds the turn it asked, running or
stored, and waits for that one instead of asking again (``asked_before``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from pipeline.committee import Committee
from pipeline.context import Exchange
from pipeline.conversation import Limits
from pipeline.errors import InputError, TurnInProgress
from pipeline.outcomes import ConversationState, TurnOutcome
from pipeline.plan import RunConfig
from pipeline.records import TurnContext
from pipeline.service.store import Store

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


class LiveClient(Protocol):
    """What live conversations need of the client that stores and sends their turns.

    ``pipeline.service.client.BlendClient`` is one; naming the needs here rather than importing
    it keeps the arrow one way (the client makes live conversations, not the reverse).
    """

    committee: Committee
    limits: Limits
    store: Store  # where the conversation is read and its turns stored

    def check_queues(self) -> None: ...

    def send_turn(self, context: TurnContext, run: RunConfig) -> None: ...

    def wait_turn(
        self,
        conversation_id: str,
        turn_index: int,
        *,
        timeout: float | None = None,
        fail_on_broker_loss: bool = False,
    ) -> TurnOutcome: ...


class LiveConversation:
    """A stored, open-ended conversation of ``client``; ``ask`` one question at a time.

    ``known``: the conversation as its caller has just read or written it (``BlendClient.start``
    and ``BlendClient.live`` hand it on), so the next ``send`` does not read it again; used once,
    since the turn that send stores makes it stale. A conversation asked twice at once is still
    refused: storing the turn is the check (``add_live_turn``), not this read.
    """

    def __init__(
        self,
        client: LiveClient,
        conversation_id: str,
        known: ConversationState | None = None,
        *,
        queues_checked: bool = False,
    ) -> None:
        self.client = client
        self.conversation_id = conversation_id
        self._known = known
        self._queues_checked = queues_checked  # by ``BlendClient.start``, just now: the first send skips it

    def _state(self) -> ConversationState | None:
        """The conversation now: what the caller handed on (once), else read."""
        known, self._known = self._known, None
        return known if known is not None else self.client.store.state(self.conversation_id)

    def ask(self, question: str, *, timeout: float | None = None) -> TurnOutcome:
        """Blend the answer to ``question`` (the turn sees every earlier blended answer)."""
        return self.wait(self.send(question), timeout=timeout)

    async def aask(self, question: str, *, timeout: float | None = None) -> TurnOutcome:
        """``ask`` for servers and notebooks: the event loop keeps running while the committee works."""
        return await off_loop(lambda: self.ask(question, timeout=timeout))

    def wait(
        self, turn_index: int, *, timeout: float | None = None, fail_on_broker_loss: bool = False
    ) -> TurnOutcome:
        """Wait for a turn ``send`` sent (or a turn asked before: see ``asked_before``); see
        ``BlendClient.wait_turn`` for ``fail_on_broker_loss``."""
        return self.client.wait_turn(
            self.conversation_id, turn_index, timeout=timeout, fail_on_broker_loss=fail_on_broker_loss
        )

    async def await_turn(self, turn_index: int, *, timeout: float | None = None) -> TurnOutcome:
        """``wait`` without blocking the event loop."""
        return await off_loop(lambda: self.wait(turn_index, timeout=timeout))

    def send(
        self,
        question: str,
        *,
        request_key: str | None = None,
        max_new_tokens: int | None = None,
        stop: Sequence[str] = (),
    ) -> int:
        """Store ``question`` as the next turn and send it; its turn index. Does not wait.

        A question the limits refuse raises InputError before anything is read or stored.
        ``request_key`` (an HTTP request's Idempotency-Key) is stored with the turn; a key
        another turn holds raises TurnInProgress, like a question that lost the race.
        ``max_new_tokens`` and ``stop`` bound this turn's answers (a chat request's own bounds;
        a turn resent by recovery runs without them).
        """
        question = checked_question(self.client.limits, question)
        if not self._queues_checked:
            self.client.check_queues()
        self._queues_checked = False
        handed_on = self._known is not None
        bounds = (request_key, max_new_tokens, tuple(stop))
        try:
            return self._store_and_send(self._state(), question, *bounds)
        except TurnInProgress:
            if not handed_on:
                raise
            # The state handed on may have aged (a conversation held open while others asked on):
            # refused by it, the question is tried once more against the conversation as it is now.
            return self._store_and_send(self._state(), question, *bounds)

    def _store_and_send(
        self,
        state: ConversationState | None,
        question: str,
        request_key: str | None,
        max_new_tokens: int | None,
        stop: tuple[str, ...],
    ) -> int:
        """Store ``question`` as the turn after ``state`` (refused if one runs or another question
        took its place: TurnInProgress) and send it; its turn index."""
        client = self.client
        if state is None or not state.run.live:
            raise InputError(f"no live conversation with id {self.conversation_id!r}")
        if state.running:
            raise TurnInProgress(
                f"turn {len(state.questions) - 1} of conversation {self.conversation_id} is still running; "
                "ask the next question once it has an answer"
            )
        index = len(state.questions)
        if index >= client.limits.max_turns:
            raise InputError(
                f"conversation {self.conversation_id} has {index} turns; the limit is {client.limits.max_turns}"
            )
        asked_under = fingerprint(state.committee, state.run, state.system, state.exchanges())
        bounds = (max_new_tokens, stop)
        if not client.store.append_live_turn(
            self.conversation_id, index, question, asked_under, request_key, bounds
        ):
            raise TurnInProgress(
                f"another question was asked in conversation {self.conversation_id} at the same time"
            )
        context = TurnContext(
            conversation_id=self.conversation_id,
            turn_index=index,
            question=question,
            n_turns=index + 1,
            history=state.exchanges(),
            passage=state.passage,
            enqueued_at=time.time(),
            system=state.system,
            max_new_tokens=max_new_tokens,
            stop=stop,
        )
        client.send_turn(context, state.run)  # a worker decides it under the conversation's policy state
        return index


def checked_question(limits: Limits, question: object) -> str:
    """``question`` stripped; InputError naming the limit (or the unstorable character) otherwise."""
    if not isinstance(question, str):
        raise InputError(f"a question must be a string, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise InputError("the question is empty")
    limits.check_question(question)
    return question


def find_by_messages(
    client: LiveClient, run: RunConfig, system: str | None, exchanges: Sequence[Exchange]
) -> str | None:
    """The id of a live conversation whose settings and exchanges so far equal these, if any (newest)."""
    return client.store.find_live(fingerprint(client.committee.name, run, system, exchanges))


def asked_before(
    client: LiveClient,
    run: RunConfig,
    system: str | None,
    exchanges: Sequence[Exchange],
    question: str,
    *,
    conversation_id: str | None = None,
) -> tuple[str, int] | None:
    """(conversation id, turn index) of a turn already asked as ``question`` after exactly these
    settings and exchanges (in ``conversation_id`` if given), running or stored; None if none.

    A request that repeats one (a retry after a timeout, a crash, a lost reply) waits for that
    turn instead of asking the committee again.
    """
    asked_under = fingerprint(client.committee.name, run, system, exchanges)
    return client.store.find_asked(asked_under, question, conversation_id=conversation_id)
