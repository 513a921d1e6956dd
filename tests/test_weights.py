"""Reviewer weights: Spearman, consensus agreement, online and calibrated trust, and their use in a turn."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.borda import Ballot
from pipeline.correlation import ballot_correlation, spearman
from pipeline.store_keys import calibration_key, trust_key
from pipeline.weights import add_agreement, calibrate, consensus_agreement, trust_weights
from tests.conftest import scripted_committee

CANDIDATES = ["a", "b", "c", "d"]


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2], [1, 2]) is None  # too few
    assert spearman([1, 2, 3], [5, 5, 5]) is None  # constant


@given(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=12, unique=True))
def test_spearman_is_symmetric_and_bounded(values):
    other = list(reversed(values))
    rho = spearman(values, other)
    assert rho is not None and -1.0 - 1e-9 <= rho <= 1.0 + 1e-9
    assert spearman(other, values) == pytest.approx(rho)


def test_a_ballot_that_follows_quality_correlates_fully():
    quality = {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.1}
    assert ballot_correlation(("a", "b", "c", "d"), quality) == pytest.approx(1.0)
    assert ballot_correlation(("d", "c", "b", "a"), quality) == pytest.approx(-1.0)


def test_the_odd_reviewer_out_disagrees_with_the_consensus():
    # Given: three reviewers agree, a fourth ranks the reverse
    same = ("a", "b", "c", "d")
    ballots = [Ballot("r1", same), Ballot("r2", same), Ballot("r3", same), Ballot("r4", same[::-1])]

    agreement = consensus_agreement(ballots, CANDIDATES)

    assert agreement["r4"] < 0 < agreement["r1"]


def test_online_trust_starts_uniform_and_learns():
    assert trust_weights({}, ["r1", "r2"]) == {"r1": 1.0, "r2": 1.0}
    stats = add_agreement({}, {"r1": 1.0, "r2": -1.0})
    stats = add_agreement(stats, {"r1": 1.0, "r2": -1.0})
    weights = trust_weights(stats, ["r1", "r2"])
    assert weights["r1"] == pytest.approx(1.0) and weights["r2"] == 0.0  # floored at 0


def test_calibration_weights_reviewers_by_correlation_with_quality():
    quality = {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.1}
    turns = [([Ballot("good", ("a", "b", "c", "d")), Ballot("bad", ("d", "c", "b", "a"))], quality)] * 3

    weights = calibrate(turns)

    assert weights == {"good": pytest.approx(1.0), "bad": 0.0}


def test_calibration_keeps_a_blind_reviewer_at_zero_never_uniform():
    quality = {"a": 0.9, "b": 0.7, "c": 0.5}
    assert calibrate([([Ballot("bad", ("c", "b", "a"))], quality)]) == {"bad": 0.0}


# m0's answer is what every likelihood reviewer prefers; m1 (ranking) always puts its own answer first.
SCORES = {"model0": -0.1, "model1": -0.9, "model2": -0.5}


def _committee(weights: str):
    options = {"m0": {"scores": SCORES}, "m1": {"review_reply": " B > A > C"}, "m2": {"scores": SCORES}}
    committee = scripted_committee(
        3, name=f"weights-{weights}", member_options=options, reviewer_weights=weights
    )
    return committee


def test_calibrated_weights_are_used_in_the_count(embedded):
    client = embedded(_committee("calibrated"))
    client.policy_store.update(
        calibration_key(client.committee.name), lambda _: {"m0": 1.0, "m1": 0.0, "m2": 0.5}
    )

    (outcome,) = client.submit(["Weighted?"]).wait(timeout=30)

    decision = client.fetch(outcome.conversation_id).turns[0].result["decision"]
    assert decision["weights"] == {"m0": 1.0, "m1": 0.0, "m2": 0.5}
    assert decision["weights_note"] == "calibrated trust"
    # m1's ballot counts nothing: the scores are 1.0 x m0's points + 0.5 x m2's points
    assert sum(outcome.scores.values()) == pytest.approx(1.5 * 3)


def test_online_trust_is_learned_across_turns(embedded):
    client = embedded(_committee("online"))

    outcomes = client.submit(["first?", "second?", "third?"]).wait(timeout=30)

    decisions = [t.result["decision"] for t in client.fetch(outcomes[0].conversation_id).turns]
    assert decisions[0]["weights"] == {"m0": 1.0, "m1": 1.0, "m2": 1.0}  # nothing learned yet
    assert client.policy_store.get(trust_key(client.committee.name))  # agreement stats were stored
    assert decisions[2]["weights_note"] == "online trust"
