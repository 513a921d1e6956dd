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
from sqlmodel import Session

from db import crud
from db import live as live_store
from db.models import Conversation as ConversationRow
from db.models import Turn
from db.retry import with_retries
from pipeline.committee import Committee
from pipeline.context import Exchange
from pipeline.conversation import Conversation, Limits, conversation_from_json
from pipeline.errors import BlendError, InputError, ServiceUnavailable, TurnTimeout
from pipeline.outcomes import OUTCOME_FIELDS, ConversationState, StoredConversation, StoredTurn, TurnOutcome
from pipeline.plan import DEFAULT_METHOD, RunConfig, check_run, check_run_name
from pipeline.policy import PolicyStore, check_policy
from pipeline.records import TurnContext
from pipeline.service.canvas import final_task_id, start_signature
from pipeline.service.live import LiveConversation

WAIT_SLICE_S = 2.0  # how often a waiting client re-reads the database
DATABASE_PATIENCE_S = 600.0  # how long a wait without a deadline waits out an unreachable database
BROKER_GRACE_S = 10.0  # how long a server's wait tolerates a broker that does not answer
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
        self.engine = engine
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
        turns[0].attempt, turns[0].sent_at = 1, crud.utc_now()  # turn 0 is sent now, once
        with Session(self.engine, expire_on_commit=False) as session:
            crud.create_conversation(session=session, conversation=row, turns=turns)
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
        with Session(self.engine, expire_on_commit=False) as session:
            crud.create_conversation(session=session, conversation=row, turns=[])
        # What was just written is what its first question would read back: it is handed on.
        return LiveConversation(self, row.id, _state_of(row, (), {}))

    def check_queues(self) -> None:
        """Raise ServiceUnavailable if a queue of the committee has no worker (distributed mode)."""
        if self.queue_check is not None:
            self.queue_check([m.name for m in self.committee.members], self.app.conf.task_default_queue)

    # The database side of live conversations (``pipeline.service.live`` holds their logic).

    def conversation_state(self, conversation_id: str) -> ConversationState | None:
        """A stored conversation's settings, questions and blended answers so far; None if unknown."""
        with Session(self.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
            if row is None:
                return None
            turns = crud.list_turns(session=session, conversation_id=conversation_id)
            results = crud.list_results(session=session, conversation_id=conversation_id)
        return _state_of(row, [t.question for t in turns], {r.turn_index: r.answer for r in results})

    def add_live_turn(
        self,
        conversation_id: str,
        turn_index: int,
        question: str,
        history_fingerprint: str | None = None,
        request_key: str | None = None,
    ) -> bool:
        """Store turn ``turn_index`` of a live conversation; False if another question took it first
        (or another request holds ``request_key``)."""
        with Session(self.engine) as session:
            return live_store.append_turn(
                session=session,
                conversation_id=conversation_id,
                turn_index=turn_index,
                question=question,
                history_fingerprint=history_fingerprint,
                request_key=request_key,
            )

    def find_asked(
        self, history_fingerprint: str, question: str, *, conversation_id: str | None = None
    ) -> tuple[str, int] | None:
        """The newest turn asked as ``question`` under ``history_fingerprint``: (conversation, index)."""
        with Session(self.engine) as session:
            turn = live_store.find_asked(
                session=session,
                history_fingerprint=history_fingerprint,
                question=question,
                conversation_id=conversation_id,
            )
        return None if turn is None else (turn.conversation_id, turn.turn_index)

    def running_turn(self, conversation_id: str) -> tuple[int, str] | None:
        """(index, question) of the conversation's last turn if it is not stored yet; else None."""
        with Session(self.engine) as session:
            turns = crud.list_turns(session=session, conversation_id=conversation_id)
            if not turns:
                return None
            last = turns[-1]
            stored = crud.get_result(
                session=session, conversation_id=conversation_id, turn_index=last.turn_index
            )
        return None if stored is not None else (last.turn_index, last.question)

    def find_by_key(self, request_key: str) -> tuple[str, int, str] | None:
        """The turn asked by the request with this Idempotency-Key: (conversation, index, question)."""
        with Session(self.engine) as session:
            turn = live_store.find_by_key(session=session, request_key=request_key)
        return None if turn is None else (turn.conversation_id, turn.turn_index, turn.question)

    def find_live(self, fingerprint: str) -> str | None:
        """The newest live conversation whose exchanges so far have this fingerprint, if any."""
        with Session(self.engine) as session:
            return live_store.find_conversation(session=session, fingerprint=fingerprint)

    def live(self, conversation_id: str) -> LiveConversation:
        """Re-attach to a live conversation started earlier (by any client); the state read here
        is the one its next question is asked from (one read per question)."""
        state = self.conversation_state(conversation_id)
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
        with Session(self.engine, expire_on_commit=False) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
            if row is None:
                raise InputError(f"no conversation with id {conversation_id!r}")
            turns = crud.list_turns(session=session, conversation_id=conversation_id)
            results = crud.list_results(session=session, conversation_id=conversation_id)
            answers = {r.turn_index: r.answer for r in results}
            missing = [t for t in turns if t.turn_index not in answers]
            handle = BlendHandle(self, conversation_id, row.n_turns)
            if not missing:
                return handle
            first = missing[0]
            attempt = crud.claim_send(
                session=session,
                conversation_id=conversation_id,
                turn_index=first.turn_index,
                seen_attempt=first.attempt,
            )
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
        )
        self.send_turn(context, config)  # the worker folds in any stored turn the policy state missed
        return handle

    def handle(self, conversation_id: str) -> BlendHandle:
        """Re-attach to a conversation submitted earlier (by any client)."""
        with Session(self.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
        if row is None:
            raise InputError(f"no conversation with id {conversation_id!r}")
        return BlendHandle(self, conversation_id, row.n_turns)

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
        broker = _BrokerState(self.broker_epoch)
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
                    if broker.watched and _connection_error(failure):  # the result backend is away
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
        """``poll_turn``, waiting out a database that does not answer (until the deadline): the
        turn may well be stored meanwhile, and its caller should get it, not an error."""
        budget = DATABASE_PATIENCE_S if deadline is None else max(deadline - time.monotonic(), 0.0)
        return with_retries(
            f"waiting for turn {turn_index} of conversation {conversation_id}",
            lambda: self.poll_turn(conversation_id, turn_index),
            budget_s=budget,
        )

    def _check_broker(self, broker: _BrokerState, conversation_id: str, turn_index: int, fail: bool) -> None:
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

    def poll_turn(self, conversation_id: str, turn_index: int) -> TurnOutcome | int:
        """The stored outcome of a turn, or (not stored yet) the number of its current attempt."""
        with Session(self.engine) as session:
            progress = crud.turn_progress(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )
        if progress is None:
            raise InputError(f"conversation {conversation_id!r} has no turn {turn_index}")
        attempt, stored = progress
        if stored is None:
            return attempt
        return TurnOutcome.from_json(stored.model_dump(include=set(OUTCOME_FIELDS)))

    def turn_details(
        self, conversation_id: str, turn_index: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A stored turn's candidates (member, text, error) and its decision record ({} while it
        runs): what a chat answer shows besides the outcome, read in one session."""
        with Session(self.engine) as session:
            candidates = crud.turn_candidates(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )
            stored = crud.get_result(session=session, conversation_id=conversation_id, turn_index=turn_index)
        shown = [{"member": c.member, "text": c.text, "error": c.error} for c in candidates]
        return shown, (stored.decision if stored is not None else {})

    def fetch(self, conversation_id: str) -> StoredConversation:
        """Everything stored about a conversation: questions, candidates, reviews, results."""
        with Session(self.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
            if row is None:
                raise InputError(f"no conversation with id {conversation_id!r}")
            results = {
                r.turn_index: r.model_dump(mode="json")
                for r in crud.list_results(session=session, conversation_id=conversation_id)
            }
            candidates = crud.list_candidates(session=session, conversation_id=conversation_id)
            reviews = crud.list_reviews(session=session, conversation_id=conversation_id)
            turns = [
                StoredTurn(
                    turn_index=t.turn_index,
                    question=t.question,
                    gold=list(t.gold),
                    result=results.get(t.turn_index),
                    candidates=[
                        c.model_dump(mode="json") for c in candidates if c.turn_index == t.turn_index
                    ],
                    reviews=[r.model_dump(mode="json") for r in reviews if r.turn_index == t.turn_index],
                )
                for t in crud.list_turns(session=session, conversation_id=conversation_id)
            ]
            return StoredConversation(
                id=row.id,
                external_id=row.external_id,
                source=row.source,
                committee=row.committee,
                method=row.method,
                policy=row.policy,
                top_k=row.top_k,
                run=row.run,
                turns=turns,
            )


def _state_of(row: ConversationRow, questions: Sequence[str], answers: dict[int, str]) -> ConversationState:
    """A stored conversation, its questions and its blended answers, as a live turn is asked from them."""
    return ConversationState(
        id=row.id,
        committee=row.committee,
        run=RunConfig(method=row.method, policy=check_policy(row.policy), top_k=row.top_k, live=row.live),
        passage=row.passage,
        system=row.system,
        history=tuple(Exchange(q, a) for q, a in row.history),
        questions=tuple(questions),
        answers=dict(answers),
    )


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


class _BrokerState:
    """What one wait has seen of the broker: its run id at first sight, and since when it is away."""

    def __init__(self, epoch: Callable[[], str | None] | None) -> None:
        self.epoch = epoch
        self.seen = epoch() if epoch is not None else None
        self.away_since: float | None = None

    @property
    def watched(self) -> bool:
        return self.epoch is not None

    def lost(self) -> str | None:
        """ "restarted" (a new run id since the last look), "unreachable" (for over the grace), or None."""
        if self.epoch is None:
            return None
        now = self.epoch()
        if now is None:
            self.away_since = self.away_since or time.monotonic()
            return "unreachable" if time.monotonic() - self.away_since > BROKER_GRACE_S else None
        self.away_since = None
        before, self.seen = self.seen, now
        return "restarted" if before is not None and before != now else None


def _connection_error(error: BaseException) -> bool:
    """Whether ``error`` (raised while reading a result) says the result backend is unreachable."""
    return isinstance(error, (ConnectionError, OSError)) or "ConnectionError" in type(error).__name__
