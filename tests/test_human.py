"""Blind human evaluation's rules (pipeline/evaluation/human.py): which turn next, A/B balance,
win rates with their interval, the CSV export. Pure: no database, no page."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.evaluation import human
from pipeline.evaluation.human import Answered, Judged, TurnKey
from pipeline.evaluation.stats import bootstrap_interval

FIRST, SECOND = "blend", "single-m0"


def _pool(n_conversations: int, turns: int = 2) -> list[TurnKey]:
    return [TurnKey("doqa", f"c{c}", t) for c in range(n_conversations) for t in range(turns)]


def _judge_all(
    pool: list[TurnKey], rounds: int, *, judges: tuple[str, ...] = ("ann",), lean: str = "A"
) -> list[Judged]:
    """Simulate judges taking turns, each always picking ``lean``, for ``rounds`` x the pool."""
    judged: list[Judged] = []
    for i in range(rounds * len(pool)):
        judge = judges[i % len(judges)]
        drawn = human.next_draw(pool, judged, judge=judge, seed=1000 + i)
        assert drawn is not None
        shown_a = FIRST if drawn.first_is_a else SECOND
        judged.append(Judged(FIRST, SECOND, shown_a, lean, drawn.turn, judge=judge, seed=drawn.seed))  # type: ignore[arg-type]
    return judged


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), turns=st.integers(1, 4), rounds=st.integers(1, 3), judges=st.integers(1, 3))
def test_every_turn_is_judged_before_any_is_judged_twice(
    n: int, turns: int, rounds: int, judges: int
) -> None:
    pool = _pool(n, turns)
    names = tuple(f"judge{j}" for j in range(judges))

    judged = _judge_all(pool, rounds, judges=names)

    # Then: after each judgement, the counts differ by at most one, so round r finishes before r+1
    for done in range(1, len(judged) + 1):
        counts = Counter(j.turn for j in judged[:done])
        values = [counts.get(t, 0) for t in pool]
        assert max(values) - min(values) <= 1, (done, values)
    assert set(Counter(j.turn for j in judged).values()) == {rounds}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10), lean=st.sampled_from(["A", "B", "tie"]))
def test_a_and_b_stay_balanced_whatever_the_judge_picks(n: int, lean: str) -> None:
    judged = _judge_all(_pool(n), rounds=2, lean=lean)

    shown_first = sum(j.shown_a == FIRST for j in judged)
    assert abs(shown_first - (len(judged) - shown_first)) <= 1


def test_a_person_gets_turns_someone_else_judged_before_their_own_again() -> None:
    # Given two turns, each judged once: t0 by ann, t1 by bob
    pool = _pool(1)
    judged = [
        Judged(FIRST, SECOND, FIRST, "A", pool[0], judge="ann"),
        Judged(FIRST, SECOND, SECOND, "A", pool[1], judge="bob"),
    ]

    # When ann draws the second round, whatever the seed, she gets the turn she has not judged
    assert {human.next_draw(pool, judged, judge="ann", seed=s).turn for s in range(30)} == {pool[1]}  # type: ignore[union-attr]


def test_a_draw_is_reproducible_from_its_seed_and_none_from_an_empty_pool() -> None:
    pool = _pool(5)
    draws = {human.draw(pool, {}, seed=s) for s in range(40)}
    assert human.draw(pool, {}, seed=7) == human.draw(pool, {}, seed=7)
    assert len({d.turn for d in draws if d}) > 1 and {d.first_is_a for d in draws if d} == {True, False}
    assert human.draw([], {}, seed=1) is None


def test_the_pool_holds_turns_both_runs_answered_differently() -> None:
    t = [TurnKey("coqa", "x", i) for i in range(4)]
    first = {t[0]: Answered("f1", "Paris"), t[1]: Answered("f1", "It is  Rome"), t[2]: Answered("f1", "x")}
    second = {t[0]: Answered("s1", "Lyon"), t[1]: Answered("s1", "It is Rome"), t[3]: Answered("s1", "y")}

    pool = human.pair_pool(first, second)

    assert pool.turns == {t[0]: ("f1", "s1")}  # t1 alike (spacing aside), t2/t3 answered by one run only
    assert pool.identical == 1


def test_a_pair_has_one_order_and_two_runs() -> None:
    assert human.run_pair("z", "a") == human.run_pair("a", "z") == ("a", "z")
    with pytest.raises(InputError, match="two different runs"):
        human.run_pair("a", "a")


def _verdicts(outcomes: dict[str, list[str]]) -> list[Judged]:
    """Judgements of FIRST vs SECOND: per conversation, the outcomes for FIRST (win/tie/loss);
    sides alternate so that the choice as seen (A/B) differs from the winner."""
    rows = []
    for conversation, results in outcomes.items():
        for i, result in enumerate(results):
            shown_a = FIRST if i % 2 == 0 else SECOND
            if result == "tie":
                choice = "tie"
            else:
                winner = FIRST if result == "win" else SECOND
                choice = "A" if winner == shown_a else "B"
            rows.append(Judged(FIRST, SECOND, shown_a, choice, TurnKey("d", conversation, i)))  # type: ignore[arg-type]
    return rows


def test_win_rate_counts_ties_half_and_its_interval_covers_it() -> None:
    judged = _verdicts(
        {"c1": ["win", "win", "tie"], "c2": ["loss", "win"], "c3": ["win", "tie", "loss", "win"]}
    )

    (rate,) = human.win_rates(judged, resamples=500, seed=3)

    assert (rate.first, rate.second) == (FIRST, SECOND)
    assert (rate.wins, rate.ties, rate.losses, rate.judgements) == (5, 2, 2, 9)
    assert rate.rate == pytest.approx((5 + 1) / 9)
    assert rate.n_conversations == 3
    assert rate.low is not None and rate.high is not None
    assert 0.0 <= rate.low <= rate.rate <= rate.high <= 1.0
    assert human.win_rates(judged, resamples=500, seed=3) == [rate]  # seeded


def test_the_interval_resamples_whole_conversations() -> None:
    # Given: every conversation is a clean sweep, one way or the other
    judged = _verdicts({"c1": ["win"] * 5, "c2": ["loss"] * 5, "c3": ["win"] * 5, "c4": ["loss"] * 5})

    (rate,) = human.win_rates(judged, resamples=2000, seed=0)

    # Then the interval is that of 4 clusters, far wider than 20 independent judgements would give
    assert rate.rate == 0.5 and rate.low is not None and rate.high is not None
    assert rate.high - rate.low >= 0.5
    # and it is stats.bootstrap_interval's, over (points, judgements) per conversation
    expected = bootstrap_interval(
        [(5.0, 5.0), (0.0, 5.0), (5.0, 5.0), (0.0, 5.0)],
        lambda c: sum(p for p, _ in c) / sum(n for _, n in c),
        resamples=2000,
        seed=0,
    )
    assert (rate.low, rate.high) == expected


def test_one_conversation_has_no_interval() -> None:
    (rate,) = human.win_rates(_verdicts({"c1": ["win", "loss", "win"]}))
    assert rate.low is None and rate.high is None and rate.rate == pytest.approx(2 / 3)
    markdown = "\n".join(human.render_markdown([rate]))
    assert "| blend | single-m0 | 2 | 0 | 1 | 67 % | — | 1 / 3 |" in markdown
    assert human.render_markdown([]) == []


def test_the_csv_export_has_one_line_per_judgement_with_the_winner() -> None:
    when = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    judged = [
        Judged(FIRST, SECOND, SECOND, "A", TurnKey("doqa", "c1", 0), "ann", when, 'terse, "but" right', 11),
        Judged(FIRST, SECOND, FIRST, "tie", TurnKey("doqa", "c1", 1), "bob", when, "", 12),
    ]

    rows = list(csv.DictReader(io.StringIO(human.render_csv(judged))))

    assert tuple(rows[0]) == human.CSV_COLUMNS
    assert rows[0] == {
        "judged_at": "2030-05-01T12:00:00+00:00",
        "judge": "ann",
        "first_run": FIRST,
        "second_run": SECOND,
        "dataset": "doqa",
        "external_id": "c1",
        "turn": "1",
        "shown_as_a": SECOND,
        "choice": "A",
        "winner": SECOND,
        "note": 'terse, "but" right',
        "seed": "11",
    }
    assert (rows[1]["turn"], rows[1]["winner"], rows[1]["judge"]) == ("2", "tie", "bob")
