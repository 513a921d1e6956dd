"""What a client reads back: a finished turn's outcome, and a stored conversation with every record.

Plain data (no Celery, no ORM): the aggregate task returns the ``OUTCOME_FIELDS`` of
the result row it stored, and ``BlendClient.wait_turn`` hands them over as a
``TurnOutcome``; ``BlendClient.fetch`` reads a ``StoredConversation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.context import Exchange
from pipeline.plan import RunConfig
from pipeline.wire import record_of

OUTCOME_FIELDS = (
    "conversation_id",
    "turn_index",
    "answer",
    "chosen",
    "status",
    "ranking",
    "scores",
    "timings",
)


@dataclass(frozen=True)
class TurnOutcome:
    """A finished turn as the aggregate task reports it."""

    conversation_id: str
    turn_index: int
    answer: str
    chosen: str | None  # member whose answer was taken (None when fused or none usable)
    status: str
    ranking: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnOutcome:
        return record_of(cls, data)


@dataclass(frozen=True)
class StoredTurn:
    turn_index: int
    question: str
    gold: list[str]
    result: dict[str, Any] | None  # None while the turn is not finished
    candidates: list[dict[str, Any]]
    reviews: list[dict[str, Any]]


@dataclass(frozen=True)
class StoredConversation:
    id: str
    external_id: str | None
    source: str | None
    committee: str
    method: str
    policy: str
    top_k: int
    run: str | None
    turns: list[StoredTurn]

    @property
    def finished(self) -> bool:
        return all(t.result is not None for t in self.turns)


@dataclass(frozen=True)
class ConversationState:
    """A stored conversation's settings, questions and blended answers so far (what a live
    conversation reads before its next question)."""

    id: str
    committee: str
    run: RunConfig
    passage: str | None
    system: str | None
    history: tuple[Exchange, ...]  # given before the first turn
    questions: tuple[str, ...]  # one per stored turn, in order
    answers: dict[int, str]  # turn index -> blended answer, for the finished turns

    @property
    def running(self) -> bool:
        """A turn is stored without its answer yet."""
        return len(self.answers) < len(self.questions)

    def exchanges(self) -> tuple[Exchange, ...]:
        """The exchanges before the next turn: the given history, then each finished turn."""
        finished = (Exchange(q, self.answers[i]) for i, q in enumerate(self.questions) if i in self.answers)
        return self.history + tuple(finished)
