"""The method registry: each variant declares its stage, and the layers route and store by asking it."""

from __future__ import annotations

import pytest

from db.models import Review
from pipeline.committee import default_committee
from pipeline.method import REPORT_ROLES
from pipeline.plan import METHODS, VARIANTS, RunConfig, is_ballot, method_named
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, Judgement, ReviewRecord
from pipeline.service.canvas import task_member


@pytest.mark.parametrize(
    ("name", "found"),
    [("peer", "peer"), ("pairwise", "pairwise"), ("single:m1", "single"), ("single:", "single")],
)
def test_a_method_name_finds_its_variant(name: str, found: str) -> None:
    variant = method_named(name)
    assert variant is not None and variant.name == found


@pytest.mark.parametrize("name", ["single", "peer:m1", "pairwise:x", "bogus", ""])
def test_an_unknown_method_name_finds_none_and_a_run_of_it_says_which_exist(name: str) -> None:
    assert method_named(name) is None
    with pytest.raises(Exception, match="unknown method") as refused:
        _ = RunConfig(method=name).variant
    assert all(shown in str(refused.value) for shown in METHODS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_review_task_goes_to_the_queue_of_the_member_its_method_names(name: str) -> None:
    # Given a reviewed turn of every generator, as the method runs the policy's choice
    committee = default_committee()
    variant = VARIANTS[name]
    decision = variant.who_works(
        committee, TurnRoles(tuple(committee.generators), tuple(committee.reviewers), "full")
    )
    reviews = variant.review_groups(committee, decision.reviewers) or tuple((r,) for r in decision.reviewers)
    # When its review stage is laid out
    tasks = variant.review_tasks(decision.generators, reviews)
    # Then a method with a review stage names a queue kwarg, and the router reads the member from it
    assert bool(tasks) == (variant.queue_kwarg is not None)
    for task in tasks:
        member = task.kwargs[variant.queue_kwarg or ""]
        assert task_member({**task.kwargs, "turn": {}}, committee) == member
        assert member in decision.reviewers


def _records(
    review_method: str, status: str
) -> tuple[tuple[CandidateRecord, ...], list[ReviewRecord], list[Judgement]]:
    """Two candidates, a's review of them and a pairwise judgement of them (every method's inputs)."""
    pool = (CandidateRecord("a", "A"), CandidateRecord("b", "B"))
    reviews = [ReviewRecord("a", review_method, status, ranking=("b", "a"), candidates=pool)]
    return pool, reviews, [Judgement("j", "a", "b", p_first=0.7, candidates=pool)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_what_a_method_stores_are_review_columns_and_it_reads_back_its_tasks_records(name: str) -> None:
    variant = VARIANTS[name]
    pool, reviews, judgements = _records("ranking", "ok")
    stored = variant.stored_reviews(reviews, judgements)
    columns = set(Review.model_fields)
    assert all(set(fields) <= columns for fields in stored)
    records = {"peer": reviews, "pairwise": judgements}.get(name, list(pool))
    candidates, read_reviews, read_judgements = variant.read([r.to_json() for r in records])
    assert list(candidates) == list(pool)
    assert [*read_reviews, *read_judgements] == ([] if name == "single" else records)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_stored_review_row_is_a_ballot_exactly_when_its_method_stores_ballots(name: str) -> None:
    # Given: the rows a turn of each method stores (peer: its ballots; pairwise: the judge's matrix)
    variant = VARIANTS[name]
    _, reviews, judgements = _records("likelihood", "scored")

    rows = variant.stored_reviews(reviews, judgements)

    # Then: calibration, the reviewer statistics and rerank read as ballots only a ballot's rows
    assert all(is_ballot(row) == variant.stores_ballots for row in rows)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_method_says_how_the_report_shows_it(name: str) -> None:
    variant = VARIANTS[name]
    method = f"{name}:m1" if variant.takes_member else name
    assert variant.report_role in REPORT_ROLES
    assert variant.label(method, "full", 1)
    # One member alone is the "member" role; a committee method says what the comparisons call it
    assert (variant.alone(method) is not None) == (variant.report_role == "member")
    assert variant.described or variant.report_role == "member"
