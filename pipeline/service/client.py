"""The Python client: submit conversations, wait for or iterate their turns, fetch them.

    with workers.connect() as client:          # embedded, or Redis + PostgreSQL
        handle = client.submit({"turns": ["Who wrote Dune?", "When was it published?"]})
        for turn in handle.turns():
            print(turn.turn_index, turn.answer)

The client stores the conversation and sends turn 0 as one small start message (a
worker decides the turn and applies its canvas), then waits on each turn's
predictable aggregate task id; each turn's aggregate task sends the next.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from sqlalchemy.engine import Engine

from db.crud import utc_now
from db.models import Conversation as ConversationRow
from db.models import Turn
from db.retry import with_retries
from pipeline.committee import Committee
from pipeline.context import Exchange
from pipeline.conversation import Conversation, Limits, conversation_from_json
from pipeline.errors import BlendError, InputError, ServiceUnavailable, TurnTimeout
from pipeline.outcomes import OUTCOME_FIELDS, StoredConversation, StoredTurn, TurnOutcome
from pipeline.plan import DEFAULT_METHOD, RunConfig, check_run, check_run_name
from pipeline.policy import PolicyStore, check_policy
from pipeline.records import TurnContext
from pipeline.service.broker import BROKER_GRACE_S, BrokerState, connection_error
from pipeline.service.canvas import final_task_id, start_signature
from pipeline.service.live import LiveConversation
from pipeline.service.store import Store, state_of

WAIT_SLICE_S = 2.0  # how often a waiting client re-reads the database
DATABASE_PATIENCE_S = 600.0  # how long a wait without a deadline waits out an unreachable database
__all__ = ["OUTCOME_FIELDS", "BlendClient", "BlendHandle", "StoredConversation", "StoredTurn", "TurnOutcome"]


class BlendHandle:
    """A submitted conversation; its turns finish in order."""

    def __init__(self, client: BlendClient, conversation_id: str, n_turns: int) -> None:
        self.client = client
        self.conversation_id = conversation_id
        self.n_turns = n_turns

    def turns(self, timeout: float | None = None) -> Iterator[TurnOutcome]:
        """Yield each turn's outcome as it finishes; ``timeout`` (s) bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for index in range(self.n_turns):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield self.client.wait_turn(self.conversation_id, index, timeout=remaining)

    def wait(self, timeout: float | None = None) -> list[TurnOutcome]:
        """All turns' outcomes, once the last one has finished."""
        return list(self.turns(timeout=timeout))


class BlendClient:
    def __init__(
        self,
        app: Celery,
        engine: Engine,
        committee: Committee,
        *,
        policy_store: PolicyStore | None = None,
        poll_interval: float = 0.005,
        limits: Limits | None = None,
        queue_check: Callable[[Iterable[str], str], None] | None = None,
        broker_epoch: Callable[[], str | None] | None = None,
    ):
        self.app = app
        self.store = Store(engine)  # every read and write of a conversation
        self.committee = committee
        self.policy_store = policy_store  # the policies' state (workers decide turns with their own)
        self.poll_interval = poll_interval
        self.limits = limits or Limits()
        # Distributed mode: refuse at once when a queue a turn needs has no worker (workers.consumers).
        self.queue_check = queue_check
        # Distributed mode: the broker's current run id (None while unreachable), to notice a restart.
        self.broker_epoch = broker_epoch

    def submit(
        self,
        conversation: Conversation | dict[str, Any] | list[Any],
        *,
        method: str = DEFAULT_METHOD,
        policy: str = "full",
        top_k: int | None = None,
        run: str | None = None,
    ) -> BlendHandle:
        """Validate and store ``conversation``, then send its first turn (one commit, one message).

        ``method``: "peer", "pairwise" or "single:<member>"; ``policy``: "full",
        "p1", "p2", "p3"; ``top_k``: 1 takes the best candidate, more fuses the
        best ``top_k`` with the aggregator (default: the committee's). Raises
        InputError, with nothing stored or sent, for anything malformed or unknown.
        """
        if not isinstance(conversation, Conversation):
            if not isinstance(conversation, (dict, list)):
                raise InputError(
                    f"a conversation must be a Conversation, dict or list, got {type(conversation).__name__}"
                )
            conversation = conversation_from_json(conversation)
        self.limits.check(conversation)
        config = check_run(self.committee, method=method, policy=policy, top_k=top_k)
        run = check_run_name(run)
        self.check_queues()
        conversation_id = uuid.uuid4().hex
        n_turns = len(conversation.questions)
        row = ConversationRow(
            id=conversation_id,
            external_id=conversation.id,
            source=conversation.source,
            committee=self.committee.name,
            method=config.method,
            policy=config.policy,
            top_k=config.top_k,
            run=run,
            n_turns=n_turns,
            passage=conversation.passage,
        )
        turns = [
            Turn(conversation_id=conversation_id, turn_index=i, question=q.text, gold=list(q.gold))
            for i, q in enumerate(conversation.questions)
        ]
        turns[0].attempt, turns[0].sent_at = 1, utc_now()  # turn 0 is sent now, once
        self.store.create(row, turns)
        first = TurnContext(
            conversation_id=conversation_id,
            turn_index=0,
            question=conversation.questions[0].text,
            n_turns=n_turns,
            passage=conversation.passage,
            enqueued_at=time.time(),
        )
        self.send_turn(first, config)
        return BlendHandle(self, conversation_id, n_turns)

    def send_turn(self, context: TurnContext, run: RunConfig) -> None:
        """Send attempt ``context.attempt`` of a stored turn (claimed by the caller): one start
        message; the worker that takes it decides the turn and applies its canvas, once.

        A live conversation's turn has someone watching it (a page, a stream): its tasks write
        their progress events (``workers.progress``); a replay's do not pay for them."""
        if run.live:
            context = replace(context, progress=True)
        start_signature(context, run, app=self.app).apply_async()

    def start(
        self,
        *,
        passage: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        system: str | None = None,
        method: str = DEFAULT_METHOD,
        policy: str = "full",
        top_k: int | None = None,
        run: str | None = None,
    ) -> LiveConversation:
        """Open a live conversation: ask its questions one at a time (``LiveConversation.ask``).

        ``history``: earlier (question, answer) exchanges the turns should see;
        ``system``: instructions given to the generators (a chat client's system
        message). Validated like ``submit``; nothing is sent until the first ``ask``.
        """
        config = replace(check_run(self.committee, method=method, policy=policy, top_k=top_k), live=True)
        run = check_run_name(run)
        exchanges = _checked_history(history)
        self.limits.check_context(passage=passage, system=system, history=exchanges)
        self.check_queues()  # a missing worker is refused before the conversation is stored
        row = ConversationRow(
            id=uuid.uuid4().hex,
            committee=self.committee.name,
            method=config.method,
            policy=config.policy,
            top_k=config.top_k,
            run=run,
            n_turns=0,
            passage=passage,
            live=True,
            system=system,
            history=[[e.question, e.answer] for e in exchanges],
        )
        self.store.create(row, [])
        # What was just written is what its first question would read back: it is handed on.
        return LiveConversation(self, row.id, state_of(row, (), {}), queues_checked=True)

    def check_queues(self) -> None:
        """Raise ServiceUnavailable if a queue of the committee has no worker (distributed mode)."""
        if self.queue_check is not None:
            self.queue_check([m.name for m in self.committee.members], self.app.conf.task_default_queue)

    def live(self, conversation_id: str) -> LiveConversation:
        """Re-attach to a live conversation started earlier (by any client); the state read here
        is the one its next question is asked from (one read per question)."""
        state = self.store.state(conversation_id)
        if state is None or not state.run.live:
            raise InputError(f"no live conversation with id {conversation_id!r}")
        return LiveConversation(self, conversation_id, state)

    def resume(self, conversation_id: str) -> BlendHandle:
        """Send the first unfinished turn of a stored conversation again, as a new attempt.

        Turns already stored are kept; the resent turn sees their blended answers
        and runs under the policy state stored for the conversation. If the earlier
        attempt is still running too, whichever finishes first is stored (once) and
        the next turn is sent once.
        """
        row, turns, answers = self.store.unfinished(conversation_id)
        handle = BlendHandle(self, conversation_id, row.n_turns)
        missing = [t for t in turns if t.turn_index not in answers]
        if not missing:
            return handle
        first = missing[0]
        attempt = self.store.claim_send(conversation_id, first.turn_index, seen_attempt=first.attempt)
        if attempt is None:
            return handle  # another client resent it at the same moment
        config = RunConfig(method=row.method, policy=check_policy(row.policy), top_k=row.top_k, live=row.live)
        context = TurnContext(
            conversation_id=conversation_id,
            turn_index=first.turn_index,
            question=first.question,
            n_turns=row.n_turns,
            history=tuple(Exchange(q, a) for q, a in row.history)
            + tuple(Exchange(t.question, answers[t.turn_index]) for t in turns[: first.turn_index]),
            passage=row.passage,
            enqueued_at=time.time(),
            attempt=attempt,
            system=row.system,
            max_new_tokens=first.max_new_tokens,  # a live turn's request bounds hold for every attempt
            stop=tuple(first.stop or ()),
        )
        self.send_turn(context, config)  # the worker folds in any stored turn the policy state missed
        return handle

    def handle(self, conversation_id: str) -> BlendHandle:
        """Re-attach to a conversation submitted earlier (by any client)."""
        row = self.store.conversation(conversation_id)
        if row is None:
            raise InputError(f"no conversation with id {conversation_id!r}")
        return BlendHandle(self, conversation_id, row.n_turns)

    def fetch(self, conversation_id: str) -> StoredConversation:
        """Everything stored about a conversation: questions, candidates, reviews, results."""
        return self.store.fetch(conversation_id)

    def wait_turn(
        self,
        conversation_id: str,
        turn_index: int,
        *,
        timeout: float | None = None,
        fail_on_broker_loss: bool = False,
    ) -> TurnOutcome:
        """Wait for a turn's outcome; the database has the last word.

        The fast path is the current attempt's aggregate result; a failure there is
        believed only if the turn is still not stored and no newer attempt was sent.
        A database that blinks meanwhile is waited out. When the broker restarts (its queues
        gone) the turn is sent again as a new attempt at once; then, with
        ``fail_on_broker_loss`` (a server, whose caller can retry), ServiceUnavailable names
        the turn, else the wait goes on for the new attempt.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        broker = BrokerState(self.broker_epoch)
        waiting: AsyncResult | None = None  # one per attempt: every get() of a new one stays subscribed
        where = f"turn {turn_index} of conversation {conversation_id}"
        try:
            while True:
                outcome = self._poll_patiently(conversation_id, turn_index, deadline)
                if isinstance(outcome, TurnOutcome):
                    return outcome
                attempt = outcome
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TurnTimeout(f"{where} did not finish within {timeout:.0f} s")
                task_id = final_task_id(conversation_id, turn_index, max(attempt, 1))
                if waiting is None or waiting.id != task_id:
                    self._let_go(waiting)
                    waiting = self.app.AsyncResult(task_id)
                try:
                    data = waiting.get(
                        timeout=min(WAIT_SLICE_S, remaining or WAIT_SLICE_S),
                        interval=self.poll_interval,
                        propagate=True,
                    )
                except CeleryTimeout:
                    self._check_broker(broker, conversation_id, turn_index, fail_on_broker_loss)
                    continue
                except Exception as failure:  # noqa: BLE001 - the task failed; does the database agree?
                    after = self._poll_patiently(conversation_id, turn_index, deadline)
                    if isinstance(after, TurnOutcome):
                        return after
                    if after != attempt:
                        continue  # a newer attempt was sent meanwhile
                    if broker.watched and connection_error(failure):  # the result backend is away
                        self._check_broker(broker, conversation_id, turn_index, fail_on_broker_loss)
                        time.sleep(min(WAIT_SLICE_S, max(remaining or WAIT_SLICE_S, 0)))
                        continue
                    raise BlendError(
                        f"{where} failed (attempt {attempt}): {type(failure).__name__}: {failure}"
                    ) from None
                return TurnOutcome.from_json(data)
        finally:
            self._let_go(waiting)

    def _poll_patiently(
        self, conversation_id: str, turn_index: int, deadline: float | None
    ) -> TurnOutcome | int:
        """``store.progress``, waiting out a database that does not answer (until the deadline): the
        turn may well be stored meanwhile, and its caller should get it, not an error."""
        budget = DATABASE_PATIENCE_S if deadline is None else max(deadline - time.monotonic(), 0.0)
        return with_retries(
            f"waiting for turn {turn_index} of conversation {conversation_id}",
            lambda: self.store.progress(conversation_id, turn_index),
            budget_s=budget,
        )

    def _check_broker(self, broker: BrokerState, conversation_id: str, turn_index: int, fail: bool) -> None:
        """Send the turn again if the broker lost it (and, with ``fail``, say so)."""
        where = f"turn {turn_index} of conversation {conversation_id}"
        lost = broker.lost()
        if lost == "restarted":
            self.resume(conversation_id)  # a new attempt, claimed once whoever else notices
            if fail:
                raise ServiceUnavailable(
                    f"the broker restarted and lost {where}; it was sent again: retry the request "
                    "(it waits for that turn) or fetch the turn later"
                )
        elif lost == "unreachable" and fail:
            raise ServiceUnavailable(
                f"the broker has not answered for {BROKER_GRACE_S:.0f} s; {where} is stored and will "
                "finish once it is back (`peerblend recover` resends it if the broker lost it)"
            )

    def _let_go(self, result: AsyncResult | None) -> None:
        """Stop the result backend's subscription for a task this client no longer waits on (a
        long-running server would otherwise keep one per turn that timed out or was read from
        the database)."""
        forget = getattr(self.app.backend, "remove_pending_result", None)  # Redis: a pub/sub channel
        if result is not None and forget is not None:
            forget(result)


def _checked_history(history: object) -> tuple[Exchange, ...]:
    """Earlier exchanges as (question, answer) pairs of strings."""
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list of (question, answer) pairs, got {type(history).__name__}")
    exchanges = []
    for index, pair in enumerate(history, start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise InputError(f"history item {index} must be a (question, answer) pair of strings")
        exchanges.append(Exchange(pair[0], pair[1]))
    return tuple(exchanges)
