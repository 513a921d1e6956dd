"""The queries of replay runs: which runs there are, their conversations, and every finished
turn of them in the shapes the report, calibration and re-ranking read (one query per table,
joined in memory: a run holds at most thousands of turns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from db.models import Candidate, Conversation, Review, Turn, TurnResult


def list_runs(*, session: Session) -> list[str]:
    query = select(Conversation.run).where(col(Conversation.run).is_not(None)).distinct()
    return sorted(r for r in session.exec(query) if r)


def run_conversations(*, session: Session, run: str) -> list[tuple[Conversation, int]]:
    """A run's conversations, oldest first, each with how many of its turns are stored (one query)."""
    stored = (
        select(func.count(col(TurnResult.id)))
        .where(col(TurnResult.conversation_id) == col(Conversation.id))
        .scalar_subquery()
    )
    query = select(Conversation, stored).where(Conversation.run == run).order_by(col(Conversation.created_at))
    return [(c, int(n)) for c, n in session.exec(query)]


def run_turns(*, session: Session, runs: Sequence[str]) -> list[dict[str, Any]]:
    """Every finished turn of the named runs, with its conversation, gold answers and candidates.

    One query per table, joined in memory: a run holds at most thousands of turns.
    """
    conversations = {
        c.id: c for c in session.exec(select(Conversation).where(col(Conversation.run).in_(list(runs))))
    }
    ids = list(conversations)
    turns = {
        (t.conversation_id, t.turn_index): t
        for t in session.exec(select(Turn).where(col(Turn.conversation_id).in_(ids)))
    }
    texts: dict[tuple[str, int], dict[str, str]] = {}
    for c in session.exec(select(Candidate).where(col(Candidate.conversation_id).in_(ids))):
        if c.error is None and c.text.strip():
            texts.setdefault((c.conversation_id, c.turn_index), {})[c.member] = c.text
    ballots: dict[tuple[str, int], dict[str, list[str]]] = {}
    for review in session.exec(select(Review).where(col(Review.conversation_id).in_(ids))):
        if review.ranking:  # a group's ballot, once per reviewer it was cast for
            turn_ballots = ballots.setdefault((review.conversation_id, review.turn_index), {})
            turn_ballots.update(dict.fromkeys(review.cast_for, list(review.ranking)))
    rows = []
    results = session.exec(select(TurnResult).where(col(TurnResult.conversation_id).in_(ids)))
    for r in sorted(results, key=lambda r: (r.conversation_id, r.turn_index)):
        conversation, key = conversations[r.conversation_id], (r.conversation_id, r.turn_index)
        rows.append(
            {
                "run": conversation.run,
                "method": conversation.method,
                "policy": conversation.policy,
                "top_k": conversation.top_k,
                "dataset": conversation.source or "unknown",
                "conversation_id": r.conversation_id,
                "external_id": conversation.external_id,
                "turn_index": r.turn_index,
                "gold": list(turns[key].gold),
                "answer": r.answer,
                "chosen": r.chosen,
                "candidates": texts.get(key, {}),
                "ballots": ballots.get(key, {}),
                "timings": dict(r.timings),
            }
        )
    return rows


def run_passages(*, session: Session, runs: Sequence[str]) -> dict[str, bool]:
    """Whether each conversation of the named runs was grounded in a passage, by conversation id."""
    query = select(Conversation.id, Conversation.passage).where(col(Conversation.run).in_(list(runs)))
    return {conversation_id: bool(passage) for conversation_id, passage in session.exec(query)}


def run_records(*, session: Session, run: str) -> list[dict[str, Any]]:
    """Every turn of a run's fully finished conversations, with all it stored: conversation fields,
    question and golds, every candidate (failed ones too), every review, and the result row.

    For re-deciding stored turns without models (``peerblend rerank``); turns come in
    conversation order (created first, first), then turn order.
    """
    conversations = list(session.exec(select(Conversation).where(Conversation.run == run)))
    ids = [c.id for c in conversations]
    by_turn: dict[tuple[str, int], dict[str, Any]] = {}
    for t in session.exec(select(Turn).where(col(Turn.conversation_id).in_(ids))):
        by_turn[(t.conversation_id, t.turn_index)] = {"question": t.question, "gold": list(t.gold)}
    for r in session.exec(select(TurnResult).where(col(TurnResult.conversation_id).in_(ids))):
        by_turn[(r.conversation_id, r.turn_index)].update(result=r.model_dump(), candidates=[], reviews=[])
    candidates = select(Candidate).where(col(Candidate.conversation_id).in_(ids)).order_by(col(Candidate.id))
    for c in session.exec(candidates):  # stored with the result, in one transaction
        by_turn[(c.conversation_id, c.turn_index)]["candidates"].append(c.model_dump(exclude={"id"}))
    for v in session.exec(
        select(Review).where(col(Review.conversation_id).in_(ids)).order_by(col(Review.id))
    ):
        by_turn[(v.conversation_id, v.turn_index)]["reviews"].append(v.model_dump(exclude={"id"}))
    rows = []
    for conversation in sorted(conversations, key=lambda c: (c.created_at, c.id)):
        turns = [by_turn[(conversation.id, i)] for i in range(conversation.n_turns)]
        if all("result" in t for t in turns):
            fields = conversation.model_dump()
            rows += [{"conversation": fields, "turn_index": i, **t} for i, t in enumerate(turns)]
    return rows


def run_summaries(*, session: Session) -> list[dict[str, Any]]:
    """Each replay run: conversations, turns asked, turns stored, when its last conversation started."""

    runs = session.exec(
        select(
            Conversation.run,
            func.count(col(Conversation.id)),
            func.sum(col(Conversation.n_turns)),
            func.max(col(Conversation.created_at)),
        )
        .where(col(Conversation.run).is_not(None))
        .group_by(col(Conversation.run))
    )
    stored = dict(
        session.exec(
            select(Conversation.run, func.count(col(TurnResult.id)))
            .join(TurnResult, col(TurnResult.conversation_id) == col(Conversation.id))
            .where(col(Conversation.run).is_not(None))
            .group_by(col(Conversation.run))
        ).all()
    )
    return [
        {
            "run": run,
            "conversations": int(n),
            "turns": int(turns or 0),
            "stored": int(stored.get(run, 0)),
            "last": last,
        }
        for run, n, turns, last in sorted(runs, key=lambda row: str(row[0]))
    ]
