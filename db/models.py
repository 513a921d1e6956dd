"""Tables for conversations, their turns, candidates, reviews and results.

Shapes split by role, as in full-stack-fastapi-template: a ``*Base`` with the
fields a caller provides, one ``table=True`` class, and public read shapes.
JSON columns hold short lists and maps (member names, scores, timings).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class ConversationBase(SQLModel):
    external_id: str | None = Field(default=None, index=True)  # the dataset's id
    source: str | None = None
    committee: str
    method: str  # "peer", "pairwise" or "single:<member>" (pipeline.plan)
    policy: str = "full"
    top_k: int = 1  # 1: the best candidate is the answer; > 1: the aggregator fuses the best top_k
    run: str | None = Field(default=None, index=True)  # replay run name
    n_turns: int
    passage: str | None = Field(default=None, sa_column=Column(Text))
    # A live conversation grows a turn per question asked (n_turns counts them so far);
    # a submitted one knows its questions up front.
    live: bool = False
    system: str | None = Field(default=None, sa_column=Column(Text))  # passed to the generators
    # Exchanges before the first blended turn, [[question, answer], ...] (a chat's earlier messages).
    history: list[list[str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Hash of every exchange so far (pipeline.service.live.fingerprint): how a chat request that repeats
    # a stored conversation's messages finds it.
    fingerprint: str | None = Field(default=None, index=True)


class Conversation(ConversationBase, table=True):
    id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=_now)


class TurnBase(SQLModel):
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn_index: int  # 0-based
    question: str = Field(sa_column=Column(Text, nullable=False))
    gold: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Turn(TurnBase, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "turn_index"),)
    id: int | None = Field(default=None, primary_key=True)
    # How many times this turn's canvas was sent (0: not yet). Sending is claimed by a
    # compare-and-set on this number, so however often a task is delivered a turn is
    # sent once per attempt; recovery starts a new attempt deliberately.
    attempt: int = 0
    sent_at: datetime | None = None  # when the current attempt was sent (UTC)
    # The attempt whose canvas a worker applied (0: none yet). A client sends a turn as one small
    # start message; the worker that takes it claims the launch by a compare-and-set on this
    # number, so a start message delivered twice launches the turn once.
    started: int = 0
    # The client's Idempotency-Key of the request that asked this turn (OpenAI endpoint): the
    # same key asks nothing twice, it attaches to this turn. Unique, so two racing requests
    # with one key cannot both add a turn.
    request_key: str | None = Field(default=None, unique=True)
    # A live turn's conversation fingerprint when it was asked (its settings and every exchange
    # before it): a retried request (same history, same question) finds the turn it asked and
    # attaches to it instead of asking again, whether the turn still runs or is stored.
    history_fingerprint: str | None = Field(default=None, index=True)
    # A live turn's request bounds on the answer (OpenAI's max_tokens and stop; None: none), kept
    # so that a turn sent again (``peerblend recover``, a broker restart) runs under them too.
    max_new_tokens: int | None = None
    stop: list[str] | None = Field(default=None, sa_column=Column(JSON))


class Candidate(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "turn_index", "member"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn_index: int
    member: str
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    seconds: float = 0.0


class Review(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "turn_index", "reviewer"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn_index: int
    reviewer: str
    method: str  # the review method: "ranking", "likelihood", "verify", ... (pipeline.committee.ReviewMethod)
    status: str  # pipeline.ballot.ParseStatus value, or "error"
    ranking: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    shown_order: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seed: int = 0
    raw: str = Field(default="", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    seconds: float = 0.0
    # The reviewers this ballot is cast for: ``reviewer`` and the others of its judgement key, whose
    # one judgement it computed (pipeline.records.ReviewRecord.voters); empty: ``reviewer`` alone
    # (every row stored before groups were).
    voters: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )

    @property
    def cast_for(self) -> list[str]:
        """The reviewers this ballot counts for (``voters``, or the reviewer alone on an old row)."""
        return self.voters or [self.reviewer]


class TurnResultBase(SQLModel):
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn_index: int
    answer: str = Field(sa_column=Column(Text, nullable=False))
    chosen: str | None = None  # member whose answer was taken; None when fused or none
    status: str  # "ok", "single", "unranked", "fused", "no_ballots", "no_candidates", "fusion_failed"
    method: str
    policy: str = "full"
    ranking: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    scores: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The policy's decision (who answered, who reviewed, who sat out and why), ballots used.
    decision: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class TurnResult(TurnResultBase, table=True):
    __tablename__ = "turn_result"
    __table_args__ = (UniqueConstraint("conversation_id", "turn_index"),)
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=_now)


class TurnEvent(SQLModel, table=True):
    """What a running turn has produced so far (a candidate, a ballot, a judgement), written by
    the task that produced it, so a page or a stream can show a turn's stages as they happen.

    Advisory: the turn's stored rows are the truth. A redelivered task writes its event again;
    readers keep the newest per (kind, member).
    """

    __tablename__ = "turn_event"
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn_index: int
    kind: str  # candidate | ballot | judgement
    member: str  # who produced it (the generator, the reviewer, the judge)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)


class PolicyState(SQLModel, table=True):
    """Policy state in embedded mode (Redis holds it in distributed mode): a JSON value per key."""

    __tablename__ = "policy_state"
    key: str = Field(primary_key=True)
    value: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = 0  # optimistic concurrency: an update applies only to the version it read


class HumanJudgement(SQLModel, table=True):
    """A person's blind judgement of two runs' answers to one dataset question (``/evaluate``).

    The pair is stored in name order (pipeline.evaluation.human.run_pair); ``shown_a`` says
    which run's answer the person saw as A, ``choice`` is what they picked as they saw it.
    """

    __tablename__ = "human_judgement"
    # One judgement per draw: a form sent twice (a double click, the back button) stores one row.
    __table_args__ = (UniqueConstraint("first_run", "second_run", "seed"),)
    id: int | None = Field(default=None, primary_key=True)
    judge: str  # the name the person typed (kept in a cookie)
    first_run: str = Field(index=True)
    second_run: str = Field(index=True)
    shown_a: str
    dataset: str  # the conversations' source
    external_id: str  # the dataset's conversation id, shared by both runs' conversations
    turn_index: int  # 0-based
    first_conversation_id: str = Field(foreign_key="conversation.id")
    second_conversation_id: str = Field(foreign_key="conversation.id")
    choice: str  # "A", "B" or "tie"
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))  # the draw's randomness
    created_at: datetime = Field(default_factory=_now)
