"""The small JSON records that travel between the tasks of a turn.

Everything here round-trips through Celery's JSON serializer: ids, names,
short texts and numbers, never models or tensors. The member <-> candidate
mapping is explicit in every record; nothing is inferred from completion order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from pipeline.context import Exchange
from pipeline.wire import json_of, record_of

# On the wire an earlier exchange is a [question, answer] pair.
History = Annotated[
    tuple[Exchange, ...],
    BeforeValidator(lambda pairs: tuple(Exchange(q, a) for q, a in pairs)),
    PlainSerializer(lambda history: [[e.question, e.answer] for e in history]),
]
# Read as () when null: a review stored before groups had none (``ReviewRecord.voters``).
Voters = Annotated[tuple[str, ...], BeforeValidator(lambda voters: voters or ())]


@dataclass(frozen=True)
class TurnContext:
    """What every task of a turn needs to know about it."""

    conversation_id: str
    turn_index: int  # 0-based
    question: str
    n_turns: int = 1  # questions in the conversation
    history: History = ()
    passage: str | None = None
    enqueued_at: float = 0.0  # epoch seconds when the turn's canvas was sent
    attempt: int = 1  # which sending of this turn (recovery sends a stalled turn again)
    system: str | None = None  # the user's system message, given to the generators
    # A chat request's bounds on the answer (OpenAI's max_tokens and stop): each generator's and
    # the fusion's answer is at most this many tokens and ends before any of these strings.
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    progress: bool = False  # its tasks write progress events (someone watches it: a live turn)

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnContext:
        return record_of(cls, data)


@dataclass(frozen=True)
class CandidateRecord:
    """One member's answer to a turn, or the error that kept it from answering."""

    member: str
    text: str = ""
    error: str | None = None
    seconds: float = 0.0  # time in the backend
    finished_at: float = 0.0  # epoch seconds
    prompt_tokens: int = 0  # what its model calls read and wrote (pipeline.usage)
    completion_tokens: int = 0
    tokens_counted: str = "estimate"  # or "tokenizer": the member's own
    ran_out: bool = False  # its text ran into max_new_tokens (OpenAI's finish_reason "length")

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.text.strip())

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CandidateRecord:
        return record_of(cls, data)


@dataclass(frozen=True)
class ReviewRecord:
    """One reviewer's ballot over the candidates it was shown.

    ``ranking`` is by member name, best first; empty when the reviewer gave no
    ballot (``status`` says why). ``raw`` is the reviewer's text, or its scores.
    ``candidates`` carries the turn's candidates on to the aggregation step.
    ``voters``: the reviewers this ballot is cast for: the turn's reviewers of one
    judgement key (``pipeline.aggregate.judgement_key``), whose judgement is computed
    once, by ``reviewer`` (the first of them); ``(reviewer,)`` when it judges alone
    (and for records written before groups were).
    """

    reviewer: str
    method: str
    status: str
    ranking: tuple[str, ...] = ()
    shown_order: tuple[str, ...] = ()
    seed: int = 0
    raw: str = ""
    error: str | None = None
    seconds: float = 0.0
    finished_at: float = 0.0
    candidates: tuple[CandidateRecord, ...] = field(default_factory=tuple)
    voters: Voters = ()
    prompt_tokens: int = 0  # what its model calls read and wrote (pipeline.usage)
    completion_tokens: int = 0
    tokens_counted: str = "estimate"  # or "tokenizer": the member's own

    def __post_init__(self) -> None:
        if not self.voters:
            object.__setattr__(self, "voters", (self.reviewer,))

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewRecord:
        return record_of(cls, data)


@dataclass(frozen=True)
class Judgement:
    """A pairwise judge's confidence that ``first`` beats ``second`` (shown in that order):
    the record of one task of the pairwise method's stage (``pipeline.pairwise``)."""

    judge: str
    first: str
    second: str
    p_first: float | None = None  # None when the pair could not be judged
    error: str | None = None
    seconds: float = 0.0
    finished_at: float = 0.0
    candidates: tuple[CandidateRecord, ...] = field(default_factory=tuple)
    prompt_tokens: int = 0  # what its model calls read and wrote (pipeline.usage)
    completion_tokens: int = 0
    tokens_counted: str = "estimate"  # or "tokenizer": the member's own

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Judgement:
        return record_of(cls, data)


def candidate_from_row(stored: Mapping[str, Any]) -> CandidateRecord:
    """A stored candidate row (``db.runs.run_records``) as a record."""
    return CandidateRecord(stored["member"], stored["text"], stored["error"], stored["seconds"])


def review_from_row(stored: Mapping[str, Any]) -> ReviewRecord:
    """A stored review row as a record (its scores in ``raw``); a row stored before review groups
    is cast for its reviewer alone."""
    return ReviewRecord(
        stored["reviewer"],
        stored["method"],
        stored["status"],
        tuple(stored["ranking"]),
        raw=stored.get("raw") or "",
        voters=tuple(stored.get("voters") or ()),
    )


def per_reviewer(reviews: Sequence[ReviewRecord]) -> list[ReviewRecord]:
    """Each record once per reviewer it was cast for (the same ballot, ``voters`` that reviewer alone).

    For the code that reads one ballot per reviewer: per-reviewer weights and online trust
    (which count the copies of one judgement as one voter through the judgement keys), and
    per-reviewer statistics. A record cast for one reviewer comes back as it is.
    """
    return [
        r if r.voters == (r.reviewer,) else replace(r, reviewer=voter, voters=(voter,))
        for r in reviews
        for voter in r.voters
    ]


def cast_within(reviews: Sequence[ReviewRecord], panel: Collection[str] | None) -> list[ReviewRecord]:
    """The ballots the reviewers of ``panel`` cast (None: every one's): a group's record counted for
    its members in the panel alone (reviewed by the first of them), left out when none is."""
    if panel is None:
        return list(reviews)
    kept = []
    for r in reviews:
        voters = tuple(v for v in r.voters if v in panel)
        if voters:
            kept.append(r if voters == r.voters else replace(r, reviewer=voters[0], voters=voters))
    return kept
