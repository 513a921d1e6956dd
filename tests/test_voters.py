"""Honest voters: reviewers whose judgement is the same function count as one voter."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from pipeline.aggregate import decide, judgement_key, judgement_keys, voter_groups, voter_weights
from pipeline.borda import Ballot
from pipeline.committee import Committee, Generation, Member
from pipeline.plan import RunConfig
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.verdict import TurnInputs, decide_turn
from pipeline.weights import UNIFORM, consensus_agreement
from tests.conftest import scripted_committee
from workers.report import print_voters

POOL = ["x", "y", "z"]
CANDIDATES = [CandidateRecord(m, f"answer {m}") for m in POOL]


def _member(name: str, **fields: object) -> Member:
    return Member(name=name, backend="scripted", model=str(fields.pop("model", "same")), **fields)  # type: ignore[arg-type]


def _review(reviewer: str, *ranking: str) -> ReviewRecord:
    return ReviewRecord(reviewer, "likelihood", "scored", ranking=ranking)


def test_the_same_model_and_review_prompt_is_one_judgement() -> None:
    a = _member("a", generation=Generation(style="terse", max_new_tokens=8))
    b = _member("b", queue="elsewhere", timeout_s=5)  # generation, queue, time limit: not the judgement

    assert judgement_key(a) == judgement_key(b)
    assert judgement_key(a) != judgement_key(_member("c", model="other"))
    assert judgement_key(a) != judgement_key(_member("d", review_method="ranking"))
    assert judgement_key(a) != judgement_key(_member("e", dtype="bfloat16"))
    assert judgement_key(a) != judgement_key(_member("f", options={"scores": {"x": -0.5}}))


def test_ranking_reviewers_differ_by_their_prompt_token_limit_only() -> None:
    short = _member("a", review_method="ranking", generation=Generation(review_max_new_tokens=8))
    same = _member(
        "b", review_method="ranking", generation=Generation(review_max_new_tokens=8, style="terse")
    )
    longer = _member("c", review_method="ranking", generation=Generation(review_max_new_tokens=32))

    assert judgement_key(short) == judgement_key(same) != judgement_key(longer)


def test_committee_keys_cover_its_reviewers_only() -> None:
    committee = Committee(
        members=(_member("a"), _member("b"), _member("g", roles=("generator",), model="gen")),
    )
    keys = judgement_keys(committee)

    assert set(keys) == {"a", "b"}
    assert voter_groups(["a", "b"], keys) == (("a", "b"),)


def test_groups_share_one_ballot_weight() -> None:
    groups = voter_groups(["a1", "b", "a2"], {"a1": "A", "a2": "A", "b": "B"})

    assert groups == (("a1", "a2"), ("b",))
    assert voter_weights(groups) == {"a1": 0.5, "a2": 0.5, "b": 1.0}
    assert voter_weights(groups, {"a1": 0.4, "a2": 0.2}) == pytest.approx({"a1": 0.2, "a2": 0.1, "b": 1.0})
    assert voter_groups(["a", "b"], None) == (("a",), ("b",))


def test_a_duplicated_judge_no_longer_outvotes_an_independent_one() -> None:
    # Given: a1 and a2 are one model scoring the same way (x > y > z); b prefers y > z > x
    reviews = [_review("a1", "x", "y", "z"), _review("a2", "x", "y", "z"), _review("b", "y", "z", "x")]
    keys = {"a1": "A", "a2": "A", "b": "B"}

    naive = decide(CANDIDATES, reviews, committee_order=POOL)
    honest = decide(CANDIDATES, reviews, committee_order=POOL, voters=keys)

    # Then: counted twice, a's judgement wins (x 4, y 4, more first places); counted once, y wins (x 2, y 3)
    assert naive.chosen == "x"
    assert honest.chosen == "y"
    assert honest.scores == {"x": 2.0, "y": 3.0, "z": 1.0}
    assert honest.voters == (("a1", "a2"), ("b",))
    assert honest.ballots_used == 3


def test_a_group_member_without_a_ballot_leaves_the_weight_to_the_other() -> None:
    reviews = [_review("a1"), _review("a2", "x", "y", "z"), _review("b", "y", "z", "x")]

    decision = decide(CANDIDATES, reviews, committee_order=POOL, voters={"a1": "A", "a2": "A", "b": "B"})

    assert decision.ballot_weights == {"a2": 1.0, "b": 1.0}
    assert decision.voters == (("a2",), ("b",))


@given(
    st.lists(st.permutations(POOL), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=3),
)
def test_cloning_a_reviewer_changes_nothing(rankings: list[list[str]], which: int, clones: int) -> None:
    # Given any ballots, and one reviewer cloned (same judgement key, so the same ballot) several times
    which %= len(rankings)
    reviews = [_review(f"r{i}", *r) for i, r in enumerate(rankings)]
    keys = {f"r{i}": f"k{i}" for i in range(len(rankings))}
    for c in range(clones):
        reviews.append(_review(f"clone{c}", *rankings[which]))
        keys[f"clone{c}"] = f"k{which}"

    alone = decide(CANDIDATES, reviews[: len(rankings)], committee_order=POOL, voters=keys)
    cloned = decide(CANDIDATES, reviews, committee_order=POOL, voters=keys)

    assert cloned.ranking == alone.ranking
    assert cloned.scores == pytest.approx(alone.scores)
    assert len(cloned.voters) == len(alone.voters)


def test_online_agreement_does_not_count_a_clone_as_another_voter() -> None:
    ballots = [Ballot("a1", ("x", "y", "z")), Ballot("a2", ("x", "y", "z")), Ballot("b", ("y", "x", "z"))]

    naive = consensus_agreement(ballots, POOL)
    honest = consensus_agreement(ballots, POOL, {"a1": "A", "a2": "A", "b": "B"})

    assert honest["a1"] == pytest.approx(0.5)  # only b is another voter: it swaps the first two
    assert naive["a1"] > honest["a1"]  # counting its clone, a1 looked more trustworthy than it is


def test_the_turn_records_its_voters_and_show_prints_them() -> None:
    reviews = [_review("a1", "x", "y", "z"), _review("a2", "x", "y", "z"), _review("b", "y", "z", "x")]
    everyone = TurnRoles(tuple(POOL), ("a1", "a2", "b"), "full ranking")
    verdict = decide_turn(
        TurnInputs(TurnContext("c", 0, "q?"), RunConfig(), everyone, CANDIDATES, reviews),
        committee_order=POOL,
        weights=UNIFORM,
        voters={"a1": "A", "a2": "A", "b": "B"},
        now=0.0,
    )

    assert verdict.record["voters"] == [["a1", "a2"], ["b"]]
    assert verdict.record["independent_voters"] == 2
    assert verdict.record["ballot_weights"] == {"a1": 0.5, "a2": 0.5, "b": 1.0}
    out = io.StringIO()
    print_voters(Console(file=out, width=200), verdict.record)
    assert "independent voters: 2 of 3 ballots: a1 = a2 (1); b (1) (uniform)" in out.getvalue()


SAME = {"scores": {"model": -0.1}}


def test_a_committee_with_two_copies_of_one_judge_stores_two_voters(embedded) -> None:
    # Given: m0 and m1 are one scripted model with one scoring; m2 is another model
    base = scripted_committee(3, name="voters")
    members = (
        base.members[0].model_copy(update={"model": "same", "options": SAME}),
        base.members[1].model_copy(update={"model": "same", "options": SAME, "review_method": "likelihood"}),
        base.members[2],
    )
    client = embedded(base.model_copy(update={"members": members}))

    (outcome,) = client.submit(["Who votes?"]).wait(timeout=30)

    decision = client.fetch(outcome.conversation_id).turns[0].result["decision"]
    assert decision["voters"] == [["m0", "m1"], ["m2"]]
    assert decision["independent_voters"] == 2
    assert decision["ballots"] == 2  # one review for m0 and m1 (tests/test_review_groups.py)
