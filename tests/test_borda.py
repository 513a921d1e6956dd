"""Borda count: the SPEC's worked example, partial ballots, weights, self-votes, tie-break."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.borda import Ballot, ballot_points, borda_order, borda_ranking, borda_scores, first_places

SPEC_CANDIDATES = ["M1", "M2", "M3", "M4"]
SPEC_BALLOTS = [
    Ballot("r1", ("M1", "M2", "M3", "M4")),
    Ballot("r2", ("M1", "M2", "M4", "M3")),
    Ballot("r3", ("M2", "M3", "M1", "M4")),
]


# --- the SPEC's worked example ---------------------------------------------------------------


def test_spec_worked_example_scores() -> None:
    scores = borda_scores(SPEC_BALLOTS, SPEC_CANDIDATES)

    assert scores == {"M1": 7.0, "M2": 7.0, "M3": 3.0, "M4": 1.0}


def test_spec_worked_example_tie_broken_by_first_places() -> None:
    # Given M1 and M2 tie on 7 points, M1 ranked first by two ballots and M2 by one
    # When the ranking is computed
    # Then the documented tie-break (more first places) puts M1 ahead of M2
    assert first_places(SPEC_BALLOTS, SPEC_CANDIDATES) == {"M1": 2.0, "M2": 1.0, "M3": 0.0, "M4": 0.0}
    assert borda_ranking(SPEC_BALLOTS, SPEC_CANDIDATES) == ["M1", "M2", "M3", "M4"]


def test_spec_worked_example_first_places_outrank_candidate_order() -> None:
    # Given the same ballots but M2 listed before M1 in the committee order
    # When ranked
    # Then first places (the second key) still decide before the committee order (the third)
    assert borda_ranking(SPEC_BALLOTS, ["M2", "M1", "M3", "M4"]) == ["M1", "M2", "M3", "M4"]


def test_full_tie_falls_back_to_candidate_order() -> None:
    # Given two ballots that exactly cancel out (equal points, one first place each)
    ballots = [Ballot("r1", ("A", "B")), Ballot("r2", ("B", "A"))]

    # Then the candidates' order decides, whichever it is
    assert borda_ranking(ballots, ["A", "B"]) == ["A", "B"]
    assert borda_ranking(ballots, ["B", "A"]) == ["B", "A"]


# --- single ballots --------------------------------------------------------------------------


def test_complete_ballot_gives_m_minus_position() -> None:
    assert ballot_points(["C", "A", "B"], ["A", "B", "C"]) == {"C": 2.0, "A": 1.0, "B": 0.0}


def test_partial_ballot_shares_the_remaining_points() -> None:
    # Given 4 candidates and a ballot that ranks only the first one
    # Then it gets m-1 = 3 and the three unranked share 0+1+2 = 3 equally
    points = ballot_points(["B"], ["A", "B", "C", "D"])

    assert points == {"A": 1.0, "B": 3.0, "C": 1.0, "D": 1.0}
    assert sum(points.values()) == 6.0


@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda m: st.tuples(
            st.just([f"c{i}" for i in range(m)]),
            st.permutations([f"c{i}" for i in range(m)]),
            st.integers(min_value=1, max_value=m),
        )
    )
)
def test_every_non_empty_ballot_hands_out_m_choose_2_points(case: tuple[list[str], list[str], int]) -> None:
    candidates, order, ranked = case
    m = len(candidates)

    points = ballot_points(order[:ranked], candidates)

    assert set(points) == set(candidates)
    assert sum(points.values()) == pytest.approx(m * (m - 1) / 2)


def test_unknown_labels_are_ignored() -> None:
    candidates = ["A", "B", "C"]

    with_noise = borda_scores([Ballot("r", ("X", "A", "Z", "C", "B"))], candidates)

    assert with_noise == borda_scores([Ballot("r", ("A", "C", "B"))], candidates)
    assert with_noise == {"A": 2.0, "C": 1.0, "B": 0.0}


def test_repeated_label_counts_once_at_its_first_position() -> None:
    assert ballot_points(["B", "B", "A"], ["A", "B", "C"]) == {"B": 2.0, "A": 1.0, "C": 0.0}


@pytest.mark.parametrize("ranking", [(), ("X", "Y")], ids=["empty", "only-unknown-labels"])
def test_ballot_without_candidates_counts_nothing(ranking: tuple[str, ...]) -> None:
    ballots = [Ballot("r1", ("A", "B")), Ballot("r2", ranking)]

    assert borda_scores(ballots, ["A", "B"]) == {"A": 1.0, "B": 0.0}
    assert first_places(ballots, ["A", "B"]) == {"A": 1.0, "B": 0.0}


def test_no_ballots_scores_zero_and_keeps_candidate_order() -> None:
    assert borda_scores([], ["B", "A"]) == {"B": 0.0, "A": 0.0}
    assert borda_ranking([], ["B", "A"]) == ["B", "A"]


# --- weights and self-votes ------------------------------------------------------------------


def test_weights_scale_each_reviewers_points() -> None:
    ballots = [Ballot("good", ("A", "B", "C")), Ballot("poor", ("C", "B", "A"))]
    candidates = ["A", "B", "C"]

    scores = borda_scores(ballots, candidates, weights={"good": 3.0, "poor": 0.5})

    assert scores == {"A": 6.0, "B": 3.0 + 0.5, "C": 1.0}
    assert borda_ranking(ballots, candidates, weights={"good": 3.0, "poor": 0.5})[0] == "A"
    assert borda_ranking(ballots, candidates, weights={"good": 0.5, "poor": 3.0})[0] == "C"


def test_reviewer_missing_from_weights_counts_once() -> None:
    ballots = [Ballot("listed", ("A", "B")), Ballot("unlisted", ("A", "B"))]

    assert borda_scores(ballots, ["A", "B"], weights={"listed": 2.0}) == {"A": 3.0, "B": 0.0}


def test_weights_scale_first_places() -> None:
    ballots = [Ballot("r1", ("A", "B")), Ballot("r2", ("B", "A"))]

    assert first_places(ballots, ["A", "B"], weights={"r1": 2.0}) == {"A": 2.0, "B": 1.0}
    # A: 2 * 1 point, B: 1 * 1 point, so the heavier reviewer's choice wins over committee order
    assert borda_ranking(ballots, ["B", "A"], weights={"r1": 2.0}) == ["A", "B"]


def test_exclude_self_removes_points_to_own_candidate() -> None:
    # Given reviewer A puts its own candidate first
    ballots = [Ballot("A", ("A", "B", "C"))]
    candidates = ["A", "B", "C"]

    # When self-votes are excluded
    scores = borda_scores(ballots, candidates, exclude_self=True)

    # Then A gets nothing from its own ballot; B and C are ranked among themselves (m = 2)
    assert scores == {"A": 0.0, "B": 1.0, "C": 0.0}
    assert first_places(ballots, candidates, exclude_self=True) == {"A": 0.0, "B": 1.0, "C": 0.0}
    # and without the option the self-vote counts as usual
    assert borda_scores(ballots, candidates) == {"A": 2.0, "B": 1.0, "C": 0.0}


def test_exclude_self_flips_a_self_preferring_committee() -> None:
    # Given each reviewer ranks itself first, and both agree that B is better than the other
    ballots = [Ballot("A", ("A", "B", "C")), Ballot("C", ("C", "B", "A"))]
    candidates = ["A", "B", "C"]

    # Then with self-votes excluded B wins
    assert borda_ranking(ballots, candidates, exclude_self=True)[0] == "B"


def test_exclude_self_does_not_touch_outside_reviewers() -> None:
    ballots = [Ballot("judge", ("A", "B", "C"))]

    assert borda_scores(ballots, ["A", "B", "C"], exclude_self=True) == {"A": 2.0, "B": 1.0, "C": 0.0}


# --- properties ------------------------------------------------------------------------------


@st.composite
def elections(draw: st.DrawFn) -> tuple[list[str], list[Ballot]]:
    """Candidates c0..c(m-1) and ballots that may be partial, empty or carry unknown labels."""
    m = draw(st.integers(min_value=2, max_value=6))
    candidates = [f"c{i}" for i in range(m)]
    reviewers = [*candidates, "outsider"]
    ballots = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        order = draw(st.permutations(candidates))
        ranked = list(order[: draw(st.integers(min_value=0, max_value=m))])
        if draw(st.booleans()):
            ranked.insert(draw(st.integers(min_value=0, max_value=len(ranked))), "unknown")
        ballots.append(Ballot(draw(st.sampled_from(reviewers)), tuple(ranked)))
    return candidates, ballots


@given(elections(), st.randoms(use_true_random=False), st.booleans())
def test_ballot_order_does_not_matter(
    election: tuple[list[str], list[Ballot]], rnd: random.Random, exclude_self: bool
) -> None:
    candidates, ballots = election
    reordered = list(ballots)
    rnd.shuffle(reordered)

    assert borda_scores(reordered, candidates, exclude_self=exclude_self) == pytest.approx(
        borda_scores(ballots, candidates, exclude_self=exclude_self)
    )
    assert borda_ranking(reordered, candidates, exclude_self=exclude_self) == borda_ranking(
        ballots, candidates, exclude_self=exclude_self
    )


@given(elections())
def test_total_points_is_non_empty_ballots_times_m_choose_2(election: tuple[list[str], list[Ballot]]) -> None:
    candidates, ballots = election
    m = len(candidates)
    non_empty = sum(1 for b in ballots if any(c in candidates for c in b.ranking))

    total = sum(borda_scores(ballots, candidates).values())

    assert total == pytest.approx(non_empty * m * (m - 1) / 2)


@given(
    st.integers(min_value=2, max_value=6).flatmap(
        lambda m: st.tuples(
            st.just([f"c{i}" for i in range(m)]),
            st.sampled_from([f"c{i}" for i in range(m)]),
            st.lists(st.permutations([f"c{i}" for i in range(m)]), min_size=1, max_size=6),
        )
    )
)
def test_candidate_first_on_every_ballot_wins(case: tuple[list[str], str, list[list[str]]]) -> None:
    # Given every ballot puts `winner` first, the rest in any order
    candidates, winner, orders = case
    ballots = [Ballot(f"r{i}", (winner, *[c for c in o if c != winner])) for i, o in enumerate(orders)]

    # Then winner is first, and strictly ahead on points
    ranking = borda_ranking(ballots, candidates)
    scores = borda_scores(ballots, candidates)
    assert ranking[0] == winner
    assert all(scores[winner] > scores[c] for c in candidates if c != winner)


@given(elections(), st.booleans())
def test_tie_break_is_deterministic_and_documented(
    election: tuple[list[str], list[Ballot]], exclude_self: bool
) -> None:
    candidates, ballots = election

    ranking = borda_ranking(ballots, candidates, exclude_self=exclude_self)

    # Same input, same ranking
    assert ranking == borda_ranking(list(ballots), list(candidates), exclude_self=exclude_self)
    assert sorted(ranking) == sorted(candidates)
    # Neighbours are ordered by (score desc, first places desc, candidate order asc)
    scores = borda_scores(ballots, candidates, exclude_self=exclude_self)
    firsts = first_places(ballots, candidates, exclude_self=exclude_self)
    key = {c: (-scores[c], -firsts[c], candidates.index(c)) for c in candidates}
    assert all(key[a] < key[b] for a, b in zip(ranking, ranking[1:], strict=False))


def test_a_groups_weight_shares_tie_where_whole_ballots_would() -> None:
    # Given: a group of three sharing one weight (1/3 each) ranks b over a; another voter ranks a over b
    ballots = [Ballot(r, ("b", "a")) for r in ("g1", "g2", "g3")] + [Ballot("solo", ("a", "b"))]
    weights = {"g1": 0.1, "g2": 0.1, "g3": 0.1, "solo": 0.3}
    scores = borda_scores(ballots, ["a", "b"], weights=weights)
    assert scores["b"] != scores["a"]  # 0.1 + 0.1 + 0.1 is not 0.3 in floating point

    # Then: the totals tie as the weights do (0.3 each), and the first places too, so the
    # candidates' order decides, in borda_ranking and in the order production uses
    assert borda_ranking(ballots, ["a", "b"], weights=weights) == ["a", "b"]
    assert borda_ranking(ballots, ["b", "a"], weights=weights) == ["b", "a"]
    firsts = first_places(ballots, ["b", "a"], weights=weights)
    assert borda_order(["b", "a"], scores, firsts) == ["b", "a"]
