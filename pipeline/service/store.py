"""The one way to read and write conversations outside the workers: ``Store``.

The client, the chat endpoint, the web pages and the CLI all go through a ``Store`` (the
client's is ``client.store``; a command without a client opens one with ``Store.at(url)``).
Each method is one session over db/'s plain queries and hands back what its callers show:
the method's shapes (``ConversationState``, ``StoredConversation``, ``Judged``, ...) or, for
the pages' tables, the rows themselves. The workers write a turn's records with db/ directly,
in the transaction of the task that made them (workers/turn.py, workers/dispatch.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from db import crud
from db import events as db_events
from db import judgements as judgement_rows
from db import live as live_rows
from db import runs as db_runs
from db.engine import get_engine
from db.models import Conversation as ConversationRow
from db.models import HumanJudgement, Turn
from pipeline.context import Exchange
from pipeline.errors import InputError
from pipeline.evaluation.human import Answered, Choice, Judged, TurnKey
from pipeline.outcomes import OUTCOME_FIELDS, ConversationState, StoredConversation, StoredTurn, TurnOutcome
from pipeline.plan import RunConfig
from pipeline.policy import check_policy

ListedRow = tuple[ConversationRow, int, str | None]  # (conversation, turns stored, first question)


class Store:
    """Conversations, turns, runs and blind judgements in the database at ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def at(cls, url: str) -> Store:
        return cls(get_engine(url))

    # --- conversations and their turns ---------------------------------------------------

    def create(self, row: ConversationRow, turns: Sequence[Turn]) -> None:
        """Store a new conversation and its turns in one commit."""
        with Session(self.engine, expire_on_commit=False) as session:
            crud.create_conversation(session=session, conversation=row, turns=list(turns))

    def conversation(self, conversation_id: str) -> ConversationRow | None:
        with Session(self.engine) as session:
            return crud.get_conversation(session=session, conversation_id=conversation_id)

    def state(self, conversation_id: str) -> ConversationState | None:
        """A conversation's settings, questions and blended answers so far; None if unknown."""
        with Session(self.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
            if row is None:
                return None
            turns = crud.list_turns(session=session, conversation_id=conversation_id)
            results = crud.list_results(session=session, conversation_id=conversation_id)
        return state_of(row, [t.question for t in turns], {r.turn_index: r.answer for r in results})

    def unfinished(self, conversation_id: str) -> tuple[ConversationRow, list[Turn], dict[int, str]]:
        """(the conversation, its turns, the answers stored so far); InputError if unknown."""
        with Session(self.engine) as session:
            row = crud.get_conversation(session=session, conversation_id=conversation_id)
            if row is None:
                raise InputError(f"no conversation with id {conversation_id!r}")
            turns = crud.list_turns(session=session, conversation_id=conversation_id)
            results = crud.list_results(session=session, conversation_id=conversation_id)
        return row, turns, {r.turn_index: r.answer for r in results}

    def claim_send(self, conversation_id: str, turn_index: int, seen_attempt: int) -> int | None:
        """The new attempt number if this caller may send the turn again (once among racers)."""
        with Session(self.engine) as session:
            return crud.claim_send(
                session=session,
                conversation_id=conversation_id,
                turn_index=turn_index,
                seen_attempt=seen_attempt,
            )

    def progress(self, conversation_id: str, turn_index: int) -> TurnOutcome | int:
        """A turn's stored outcome, or (not stored yet) the number of its current attempt."""
        with Session(self.engine) as session:
            found = crud.turn_progress(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )
        if found is None:
            raise InputError(f"conversation {conversation_id!r} has no turn {turn_index}")
        attempt, stored = found
        if stored is None:
            return attempt
        return TurnOutcome.from_json(stored.model_dump(include=set(OUTCOME_FIELDS)))

    def has_turn(self, conversation_id: str, turn_index: int) -> bool:
        with Session(self.engine) as session:
            found = crud.turn_progress(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )
        return found is not None

    def conversation_progress(self, conversation_id: str) -> tuple[int, int] | None:
        """(turns so far, turns stored); None when there is no such conversation."""
        with Session(self.engine) as session:
            return crud.conversation_progress(session=session, conversation_id=conversation_id)

    def attempts(self, conversation_id: str) -> dict[int, int]:
        """Each turn's current attempt."""
        with Session(self.engine) as session:
            return {
                t.turn_index: t.attempt
                for t in crud.list_turns(session=session, conversation_id=conversation_id)
            }

    def turn_details(
        self, conversation_id: str, turn_index: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A turn's candidates (member, text, error) and its decision record ({} while it runs)."""
        with Session(self.engine) as session:
            candidates = crud.turn_candidates(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )
            stored = crud.get_result(session=session, conversation_id=conversation_id, turn_index=turn_index)
        shown = [{"member": c.member, "text": c.text, "error": c.error} for c in candidates]
        return shown, (stored.decision if stored is not None else {})

    def turn_result(
        self, conversation_id: str, turn_index: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A stored turn's result and its reviews, as JSON; None while it runs."""
        with Session(self.engine) as session:
            result = crud.get_result(session=session, conversation_id=conversation_id, turn_index=turn_index)
            if result is None:
                return None
            reviews = [
                r.model_dump(mode="json")
                for r in crud.list_reviews(session=session, conversation_id=conversation_id)
                if r.turn_index == turn_index
            ]
            return result.model_dump(mode="json"), reviews

    def turn_events(self, conversation_id: str, turn_index: int, *, after: int = 0) -> list[dict[str, Any]]:
        """A live turn's events after event id ``after``, oldest first, as ``{"id", "kind",
        "member", "at", "record"}`` (``at``: seconds since the epoch; workers/progress.py writes them)."""
        with Session(self.engine) as session:
            rows = db_events.turn_events(
                session=session, conversation_id=conversation_id, turn_index=turn_index, after=after
            )
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "member": r.member,
                "at": r.created_at.timestamp(),
                "record": r.payload,
            }
            for r in rows
        ]

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

    def stalled(self, older_than_s: float) -> list[tuple[str, int]]:
        """(conversation, turn) of each conversation's first unfinished turn sent over
        ``older_than_s`` seconds ago."""
        sent_before = crud.utc_now() - timedelta(seconds=older_than_s)
        with Session(self.engine) as session:
            return [
                (t.conversation_id, t.turn_index)
                for t in crud.stalled_turns(session=session, sent_before=sent_before)
            ]

    # --- live conversations ------------------------------------------------------------

    def append_live_turn(
        self,
        conversation_id: str,
        turn_index: int,
        question: str,
        history_fingerprint: str | None = None,
        request_key: str | None = None,
        bounds: tuple[int | None, tuple[str, ...]] = (None, ()),
    ) -> bool:
        """Store turn ``turn_index`` of a live conversation with its request's ``bounds`` (max new
        tokens, stop strings); False if another question took it first (or another request holds
        ``request_key``)."""
        with Session(self.engine) as session:
            return live_rows.append_turn(
                session=session,
                conversation_id=conversation_id,
                turn_index=turn_index,
                question=question,
                history_fingerprint=history_fingerprint,
                request_key=request_key,
                max_new_tokens=bounds[0],
                stop=list(bounds[1]),
            )

    def discard_unasked(self, conversation_id: str) -> bool:
        """Delete a live conversation that was never asked anything (a request that lost a race
        to its twin with the same Idempotency-Key opened it); False, deleting nothing, otherwise."""
        with Session(self.engine) as session:
            return live_rows.delete_unasked(session=session, conversation_id=conversation_id)

    def find_live(self, fingerprint: str) -> str | None:
        """The newest live conversation whose exchanges so far have this fingerprint, if any."""
        with Session(self.engine) as session:
            return live_rows.find_conversation(session=session, fingerprint=fingerprint)

    def find_asked(
        self, history_fingerprint: str, question: str, *, conversation_id: str | None = None
    ) -> tuple[str, int] | None:
        """The newest turn asked as ``question`` under ``history_fingerprint``: (conversation, index)."""
        with Session(self.engine) as session:
            turn = live_rows.find_asked(
                session=session,
                history_fingerprint=history_fingerprint,
                question=question,
                conversation_id=conversation_id,
            )
        return None if turn is None else (turn.conversation_id, turn.turn_index)

    def find_by_key(self, request_key: str) -> tuple[str, int, str] | None:
        """The turn asked by the request with this Idempotency-Key: (conversation, index, question)."""
        with Session(self.engine) as session:
            turn = live_rows.find_by_key(session=session, request_key=request_key)
        return None if turn is None else (turn.conversation_id, turn.turn_index, turn.question)

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

    # --- the lists and the runs (pages, CLI) --------------------------------------------

    def list_conversations(
        self,
        *,
        run: str | None = None,
        committee: str | None = None,
        method: str | None = None,
        policy: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 25,
    ) -> tuple[list[ListedRow], int]:
        """One page of conversations, newest first, and how many match in all (db.crud)."""
        with Session(self.engine) as session:
            return crud.list_conversations(
                session=session,
                run=run,
                committee=committee,
                method=method,
                policy=policy,
                status=status,
                offset=offset,
                limit=limit,
            )

    def facets(self) -> dict[str, list[str]]:
        """The values stored in each filterable field: run, committee, method, policy."""
        with Session(self.engine) as session:
            return crud.conversation_facets(session=session)

    def runs(self) -> list[str]:
        with Session(self.engine) as session:
            return db_runs.list_runs(session=session)

    def run_summaries(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return db_runs.run_summaries(session=session)

    def run_turns(self, runs: Sequence[str]) -> list[dict[str, Any]]:
        """Every stored turn of ``runs``, as the report reads them."""
        if not runs:
            return []
        with Session(self.engine) as session:
            return db_runs.run_turns(session=session, runs=runs)

    def run_conversations(self, run: str) -> list[tuple[ConversationRow, int]]:
        """A run's conversations, each with how many of its turns are stored."""
        with Session(self.engine) as session:
            return db_runs.run_conversations(session=session, run=run)

    def run_passages(self, runs: Sequence[str]) -> dict[str, bool]:
        """Whether each conversation of ``runs`` was grounded in a passage, by conversation id."""
        with Session(self.engine) as session:
            return db_runs.run_passages(session=session, runs=runs)

    def add_copies(self, copies: Sequence[tuple[ConversationRow, Sequence[Any]]]) -> None:
        """Store conversations made from stored ones (``peerblend rerank --into``): each one's row,
        then all its turns' rows, in one commit per conversation."""
        with Session(self.engine) as session:
            for conversation, rows in copies:
                session.add(conversation)
                session.flush()  # the conversation row first: every other row points at it
                session.add_all(rows)
                session.commit()

    def run_records(self, run: str) -> list[dict[str, Any]]:
        """A run's finished conversations with their candidates and reviews (re-ranking, reviewers)."""
        with Session(self.engine) as session:
            return db_runs.run_records(session=session, run=run)

    # --- blind judgements (/evaluate) ------------------------------------------------------

    def judged(self, runs: Sequence[str] | None = None) -> list[Judged]:
        """Judgements in the order they were made; with ``runs``, only pairs of two of them.
        None yet (an empty list) in a database from before the judgements' table."""
        with Session(self.engine) as session:
            if not inspect(session.get_bind()).has_table("human_judgement"):
                return []
            return [_judged(row) for row in judgement_rows.list_judgements(session=session, runs=runs)]

    def pair_judged(self, first: str, second: str) -> list[Judged]:
        """The judgements of one pair of runs (given in name order)."""
        with Session(self.engine) as session:
            rows = judgement_rows.pair_judgements(session=session, first=first, second=second)
        return [_judged(row) for row in rows]

    def run_answers(self, run: str) -> dict[TurnKey, Answered]:
        """A run's stored answers by dataset question (see db/judgements.run_answers)."""
        with Session(self.engine) as session:
            answers = judgement_rows.run_answers(session=session, run=run)
        return {TurnKey(*key): Answered(*answer) for key, answer in answers.items()}

    def runs_with_answers(self) -> list[str]:
        with Session(self.engine) as session:
            return judgement_rows.runs_with_answers(session=session)

    def judged_pairs(self) -> list[tuple[str, str]]:
        with Session(self.engine) as session:
            return judgement_rows.judged_pairs(session=session)

    def shown_turn(self, conversation_id: str, turn_index: int) -> dict[str, Any] | None:
        """What a judge reads of one conversation at one turn (db/judgements.shown_turn)."""
        with Session(self.engine) as session:
            return judgement_rows.shown_turn(
                session=session, conversation_id=conversation_id, turn_index=turn_index
            )

    def save_judgement(self, judgement: HumanJudgement) -> bool:
        """Store a judgement; False when its draw was judged already (kept as it was)."""
        with Session(self.engine) as session:
            return judgement_rows.save_judgement(session=session, judgement=judgement)[1]


def state_of(row: ConversationRow, questions: Sequence[str], answers: dict[int, str]) -> ConversationState:
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


def _judged(row: HumanJudgement) -> Judged:
    return Judged(
        first=row.first_run,
        second=row.second_run,
        shown_a=row.shown_a,
        choice=cast(Choice, row.choice),
        turn=TurnKey(row.dataset, row.external_id, row.turn_index),
        judge=row.judge,
        judged_at=row.created_at,
        note=row.note,
        seed=row.seed,
    )
