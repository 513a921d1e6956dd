"""The method registry: each variant declares its stage, and the layers route and store by asking it."""

from __future__ import annotations

import pytest

from db.models import Review
from pipeline.committee import default_committee
from pipeline.plan import METHODS, VARIANTS, RunConfig, method_named
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


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_what_a_method_stores_are_review_columns_and_it_reads_back_its_tasks_records(name: str) -> None:
    variant = VARIANTS[name]
    pool = (CandidateRecord("a", "A"), CandidateRecord("b", "B"))
    reviews = [ReviewRecord("a", "ranking", "ok", ranking=("b", "a"), candidates=pool)]
    judgements = [Judgement("j", "a", "b", p_first=0.7, candidates=pool)]
    stored = variant.stored_reviews(reviews, judgements)
    columns = set(Review.model_fields)
    assert all(set(fields) <= columns for fields in stored)
    records = {"peer": reviews, "pairwise": judgements}.get(name, list(pool))
    candidates, read_reviews, read_judgements = variant.read([r.to_json() for r in records])
    assert list(candidates) == list(pool)
    assert [*read_reviews, *read_judgements] == ([] if name == "single" else records)
