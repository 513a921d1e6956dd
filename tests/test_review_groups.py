"""Each judgement computed once: one review per voter group, its ballot cast for the whole group."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.aggregate import decide, review_groups
from pipeline.borda import Ballot, borda_scores
from pipeline.committee import Committee, Generation, Member, default_committee
from pipeline.records import CandidateRecord, ReviewRecord, per_reviewer

POOL = ["a1", "a2", "b", "c"]
CANDIDATES = [CandidateRecord(m, f"answer {m}") for m in POOL]
KEYS = {"a1": "A", "a2": "A", "b": "B", "c": "C"}


def _review(reviewer: str, *ranking: str, voters: tuple[str, ...] = ()) -> ReviewRecord:
    return ReviewRecord(reviewer, "likelihood", "scored", ranking=ranking, voters=voters)


def _member(name: str, model: str, **fields: object) -> Member:
    return Member(name=name, backend="scripted", model=model, **fields)  # type: ignore[arg-type]


# --- who reviews ------------------------------------------------------------------------------


def test_the_default_committee_reviews_three_times_for_four_reviewers() -> None:
    committee = default_committee()
    reviewers = [m.name for m in committee.members]

    assert review_groups(reviewers, committee) == (
        ("smollm2-concise",),
        ("smollm2-terse",),
        ("gemma3-fewshot-a", "gemma3-fewshot-b"),
    )


def test_a_group_is_reviewed_by_its_first_member_in_committee_order_that_reviews_this_turn() -> None:
    committee = Committee(
        members=(
            _member("x", "m"),
            _member("y", "m"),
            _member("z", "m"),
            _member("r1", "m", review_method="ranking"),
            _member("r2", "m", review_method="ranking", generation=Generation(style="terse")),
        )
    )

    # Given the turn's reviewers in another order, and x sitting out
    groups = review_groups(["r2", "z", "y", "r1"], committee)

    # Then: committee order within each group (y runs the likelihood group), ranking reviewers grouped too
    assert groups == (("y", "z"), ("r1", "r2"))


# --- one ballot per group ---------------------------------------------------------------------


@given(
    st.permutations(POOL),
    st.permutations(POOL),
    st.permutations(POOL),
    st.floats(0.0, 3.0),
    st.floats(0.0, 3.0),
    st.booleans(),
)
def test_one_group_ballot_counts_as_its_members_identical_ballots_did(
    shared: list[str], of_b: list[str], of_c: list[str], w1: float, w2: float, weighted: bool
) -> None:
    # Given: a1 and a2 judge as one; before, each cast the same ballot; now a1 casts it for both
    weights = {"a1": w1, "a2": w2, "b": 1.5, "c": 0.5} if weighted else None
    others = [_review("b", *of_b), _review("c", *of_c)]
    before = [_review("a1", *shared), _review("a2", *shared), *others]
    after = [_review("a1", *shared, voters=("a1", "a2")), *others]

    old = decide(CANDIDATES, before, committee_order=POOL, weights=weights, voters=KEYS)
    new = decide(CANDIDATES, after, committee_order=POOL, weights=weights, voters=KEYS)

    # Then: the same scores and ranking; one ballot fewer, weighing the mean of the group's weights
    assert new.ranking == old.ranking
    assert new.scores == pytest.approx(old.scores)
    assert new.voters == old.voters == (("a1", "a2"), ("b",), ("c",))
    assert new.ballots_used == old.ballots_used - 1
    mean = (w1 + w2) / 2 if weighted else 1.0
    assert new.ballot_weights["a1"] == pytest.approx(mean)


def test_a_group_ballot_is_a_self_vote_of_every_member() -> None:
    # Given: the a-group (a1, a2) ranks its own answers first; b and c rank a2 first too
    reviews = [
        _review("a1", "a2", "a1", "b", "c", voters=("a1", "a2")),
        _review("b", "a2", "b", "c", "a1"),
        _review("c", "a2", "c", "b", "a1"),
    ]

    scores = decide(CANDIDATES, reviews, committee_order=POOL, exclude_self=True, voters=KEYS).scores

    # Then: the group's ballot gives a1 and a2 nothing; with 2 candidates left, b gets 1, c 0
    group_points = borda_scores([Ballot("a1", ("a2", "a1", "b", "c"), ("a1", "a2"))], POOL, exclude_self=True)
    assert group_points == {"a1": 0.0, "a2": 0.0, "b": 1.0, "c": 0.0}
    # b's ballot: a2 2, c 1, a1 0 (b excluded); c's: a2 2, b 1, a1 0 (c excluded)
    assert scores == {"a1": 0.0, "a2": 4.0, "b": 2.0, "c": 1.0}


def test_a_failed_group_review_leaves_no_ballot_for_the_group() -> None:
    reviews = [
        ReviewRecord("a1", "likelihood", "error", error="boom", voters=("a1", "a2")),
        _review("b", "b", "a1", "a2", "c"),
    ]

    decision = decide(CANDIDATES, reviews, committee_order=POOL, voters=KEYS)

    assert decision.voters == (("b",),)
    assert decision.chosen == "b"


# --- the record -------------------------------------------------------------------------------


def test_a_record_is_cast_for_its_reviewer_unless_it_names_its_group() -> None:
    alone = _review("b", "b", "c")
    group = _review("a1", "a1", "a2", voters=("a1", "a2"))

    assert alone.voters == ("b",)
    assert ReviewRecord.from_json(group.to_json()) == group
    assert ReviewRecord.from_json(alone.to_json()) == alone


def test_a_record_sent_before_groups_were_reads_as_its_reviewers_alone() -> None:
    old = _review("a1", "a1", "a2").to_json()
    del old["voters"]

    assert ReviewRecord.from_json(old).voters == ("a1",)


def test_per_reviewer_expands_a_group_record_into_one_copy_per_member() -> None:
    group = _review("a1", "a1", "a2", voters=("a1", "a2"))
    alone = _review("b", "b", "c")

    expanded = per_reviewer([group, alone])

    assert [(r.reviewer, r.voters, r.ranking) for r in expanded] == [
        ("a1", ("a1",), ("a1", "a2")),
        ("a2", ("a2",), ("a1", "a2")),
        ("b", ("b",), ("b", "c")),
    ]
    assert expanded[2] is alone
