"""The stored blind judgements in the shapes of pipeline/evaluation/human.py.

db/judgements.py reads and writes rows; the pure rules take `Judged`, `TurnKey` and
`Answered`. The conversion lives here, on the workers' side, so db/ needs nothing
from pipeline/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlmodel import Session

from db import judgements as store
from db.models import HumanJudgement
from pipeline.evaluation.human import Answered, Choice, Judged, TurnKey


def judged(row: HumanJudgement) -> Judged:
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


def all_judged(*, session: Session, runs: Sequence[str] | None = None) -> list[Judged]:
    """Judgements in the order they were made; with ``runs``, only pairs of two of them."""
    return [judged(row) for row in store.list_judgements(session=session, runs=runs)]


def pair_judged(*, session: Session, first: str, second: str) -> list[Judged]:
    """The judgements of one pair of runs (given in name order)."""
    return [judged(row) for row in store.pair_judgements(session=session, first=first, second=second)]


def run_answers(*, session: Session, run: str) -> dict[TurnKey, Answered]:
    """A run's stored answers by dataset question (see db/judgements.run_answers)."""
    return {
        TurnKey(*key): Answered(*answer)
        for key, answer in store.run_answers(session=session, run=run).items()
    }
