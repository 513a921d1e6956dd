"""The per-reviewer table: parse rates, voters, agreement with the gold, self-preference."""

from __future__ import annotations

import pytest

from pipeline.committee import Committee, Member
from pipeline.evaluation.reviewers import kendall_tau_b, render_reviewers, reviewer_stats


def test_kendall_tau_b_orders_ties_and_degenerate_cases() -> None:
    assert kendall_tau_b(["a", "b", "c"], {"a": 3, "b": 2, "c": 1}) == 1.0
    assert kendall_tau_b(["c", "b", "a"], {"a": 3, "b": 2, "c": 1}) == -1.0
    # one tie in the values: 2 concordant of 2 untied pairs, tau-b = 2 / sqrt(3 * 2)
    assert kendall_tau_b(["a", "b", "c"], {"a": 1, "b": 0, "c": 0}) == pytest.approx(2 / 6**0.5)
    assert kendall_tau_b(["a", "b"], {"a": 0.5, "b": 0.5}) is None


def _member(name: str, model: str, method: str = "likelihood", roles=("generator", "reviewer")) -> Member:
    return Member(name=name, backend="scripted", model=model, review_method=method, roles=roles)


COMMITTEE = Committee(
    name="t",
    members=(
        _member("a1", "A"),
        _member("a2", "A"),
        _member("b", "B", "ranking"),
    ),
)


def _row(ranking_a: list[str], ranking_b: list[str], status_b: str = "ok") -> dict:
    candidates = [
        {"member": "a1", "text": "Paris", "error": None},
        {"member": "a2", "text": "Lyon", "error": None},
        {"member": "b", "text": "the city of Paris", "error": None},
    ]
    reviews = [
        {"reviewer": "a1", "method": "likelihood", "status": "scored", "ranking": ranking_a, "seconds": 1.0},
        {"reviewer": "a2", "method": "likelihood", "status": "scored", "ranking": ranking_a, "seconds": 3.0},
        {"reviewer": "b", "method": "ranking", "status": status_b, "ranking": ranking_b, "seconds": 2.0},
    ]
    return {
        "conversation": {"source": "convquestions"},
        "gold": ["Paris"],
        "candidates": candidates,
        "reviews": reviews,
    }


def test_reviewer_stats_measure_each_judge_against_the_gold() -> None:
    rows = [
        _row(["a2", "a1", "b"], ["a1", "b", "a2"]),
        _row(["a2", "a1", "b"], [], status_b="copied"),
    ]

    stats = {(s.reviewer, s.dataset): s for s in reviewer_stats(rows, COMMITTEE)}

    a1, b = stats[("a1", "convquestions")], stats[("b", "convquestions")]
    assert a1.voter == ("a1", "a2")  # same model and method: one voter
    assert b.voter == ("b",)
    assert (a1.ballots, a1.parsed, b.ballots, b.parsed) == (2, 2, 2, 1)
    assert b.statuses["copied"] == 1
    # gold F1: a1 "Paris" 1.0, a2 "Lyon" 0.0, b "the city of Paris" 0.5 (normalised: city, paris vs paris)
    assert a1.top1 == [0.0, 0.0]  # it puts Lyon first
    assert b.top1 == [1.0]
    assert a1.taus[0] == pytest.approx(-1 / 3)  # a2 > a1 > b vs a1 > b > a2: 1 concordant, 2 discordant
    assert b.taus == [1.0]
    assert a1.own_first == [True, True]  # its own model's answer first
    assert b.own_first == [False]
    assert stats[("a2", "all")].seconds == [3.0, 3.0]

    table = render_reviewers(list(stats.values()))
    assert "| convquestions (2 voters) | b | ranking | b | 2 | 50 % | copied 1 | +1.00 (1) | 100.0 |" in table
