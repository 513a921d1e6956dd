"""Blind human judgements: the turns two runs share, storing and reading judgements.

Plain functions over a Session the caller owns, like db/crud.py; they return rows and
plain tuples. The rules (which turn next, win rates) are pipeline/evaluation/human.py's,
and pipeline/service/store.py turns these rows into its shapes: db/ imports nothing from pipeline/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.models import Conversation, HumanJudgement, Turn, TurnResult


def run_answers(*, session: Session, run: str) -> dict[tuple[str, str, int], tuple[str, str]]:
    """A run's stored answers by dataset question.

    (source, external id, turn index) -> (conversation id, answer).

    Conversations without an external id cannot be matched across runs and are left
    out; a conversation replayed twice in one run counts once (its first replay).
    """
    query = (
        select(Conversation)
        .where(Conversation.run == run, col(Conversation.external_id).is_not(None))
        .order_by(col(Conversation.created_at), col(Conversation.id))
    )
    first: dict[tuple[str, str], Conversation] = {}
    for c in session.exec(query):
        first.setdefault((c.source or "unknown", str(c.external_id)), c)
    by_id = {c.id: key for key, c in first.items()}
    results = select(TurnResult).where(col(TurnResult.conversation_id).in_(list(by_id)))
    return {
        (*by_id[r.conversation_id], r.turn_index): (r.conversation_id, r.answer)
        for r in session.exec(results)
    }


def save_judgement(*, session: Session, judgement: HumanJudgement) -> tuple[HumanJudgement, bool]:
    """Store a judgement; (the stored row, True) or, when its draw was judged already, (that row, False)."""
    session.add(judgement)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        query = select(HumanJudgement).where(
            HumanJudgement.first_run == judgement.first_run,
            HumanJudgement.second_run == judgement.second_run,
            HumanJudgement.seed == judgement.seed,
        )
        stored = session.exec(query).first()
        if stored is None:  # not our unique draw: a foreign key or another constraint
            raise
        return stored, False
    session.refresh(judgement)
    return judgement, True


def list_judgements(*, session: Session, runs: Sequence[str] | None = None) -> list[HumanJudgement]:
    """Judgements in the order they were made; with ``runs``, only pairs of two of them."""
    query = select(HumanJudgement).order_by(col(HumanJudgement.created_at), col(HumanJudgement.id))
    if runs is not None:
        query = query.where(
            col(HumanJudgement.first_run).in_(list(runs)), col(HumanJudgement.second_run).in_(list(runs))
        )
    return list(session.exec(query))


def pair_judgements(*, session: Session, first: str, second: str) -> list[HumanJudgement]:
    """The judgements of one pair of runs (given in name order)."""
    query = select(HumanJudgement).where(
        HumanJudgement.first_run == first, HumanJudgement.second_run == second
    )
    return list(session.exec(query.order_by(col(HumanJudgement.id))))


def judged_pairs(*, session: Session) -> list[tuple[str, str]]:
    """Every pair of runs with at least one judgement, in name order."""
    query = select(HumanJudgement.first_run, HumanJudgement.second_run).distinct()
    return sorted((str(a), str(b)) for a, b in session.exec(query))


def shown_turn(*, session: Session, conversation_id: str, turn_index: int) -> dict[str, Any] | None:
    """What a judge reads of one conversation at one turn: its passage, the exchanges before
    (given history, then the stored answers), the question, its gold answers and the answer.
    None when the turn has no stored answer."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    turns = {
        t.turn_index: t
        for t in session.exec(
            select(Turn).where(Turn.conversation_id == conversation_id, col(Turn.turn_index) <= turn_index)
        )
    }
    answers = {
        r.turn_index: r.answer
        for r in session.exec(
            select(TurnResult).where(
                TurnResult.conversation_id == conversation_id, col(TurnResult.turn_index) <= turn_index
            )
        )
    }
    if turn_index not in answers or turn_index not in turns:
        return None
    before = [(q, a) for q, a in conversation.history]
    before += [(turns[i].question, answers.get(i, "")) for i in range(turn_index) if i in turns]
    return {
        "passage": conversation.passage,
        "before": before,
        "question": turns[turn_index].question,
        "gold": list(turns[turn_index].gold),
        "answer": answers[turn_index],
    }


def runs_with_answers(*, session: Session) -> list[str]:
    """Runs holding at least one stored answer of a conversation with an external id (pairable)."""
    query = (
        select(Conversation.run)
        .join(TurnResult, col(TurnResult.conversation_id) == col(Conversation.id))
        .where(col(Conversation.run).is_not(None), col(Conversation.external_id).is_not(None))
        .distinct()
    )
    return sorted(str(r) for r in session.exec(query) if r)
