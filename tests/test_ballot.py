"""Ballots: strict and fallback parsing, seeded shuffles, labels, rankings from scores."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ballot import (
    LABELS,
    ParsedRanking,
    ParseStatus,
    label_map,
    parse_ranking,
    ranking_from_scores,
    review_seed,
    shuffled,
)

ABC = ["A", "B", "C"]


# --- parse_ranking: strict forms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A > C > B", ("A", "C", "B")),
        ("[B, A, C]", ("B", "A", "C")),
        (" C>A>B.", ("C", "A", "B")),
        ("B >> C >> A", ("B", "C", "A")),
        ("C, B, A", ("C", "B", "A")),
        ("A > C > B\nBecause A is the most accurate.", ("A", "C", "B")),
    ],
)
def test_strict_forms_parse_ok(text: str, expected: tuple[str, ...]) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking(expected, ParseStatus.OK)


@pytest.mark.parametrize("text", ["[D, B, C, A]", "[D>B>C>A]", "D > B > C > A"])
def test_strict_form_keeps_first_and_last_items(text: str) -> None:
    # An earlier implementation stripped the brackets together with the first and last labels
    parsed = parse_ranking(text, ["A", "B", "C", "D"])

    assert parsed.labels == ("D", "B", "C", "A")
    assert parsed.status is ParseStatus.OK


def test_strict_form_may_be_partial() -> None:
    assert parse_ranking("B > D", ["A", "B", "C", "D"]) == ParsedRanking(("B", "D"), ParseStatus.OK)


def test_duplicates_and_unknown_labels_are_dropped() -> None:
    parsed = parse_ranking("B > B > Z > A > C > A", ABC)

    assert parsed.labels == ("B", "A", "C")
    assert parsed.status is ParseStatus.OK


# --- parse_ranking: fallback forms -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ranking: C > A > B", ("C", "A", "B")),  # the model repeated the prefilled prefix
        ("I prefer C > A", ("C", "A")),  # the pronoun "I" is not one of the labels
        ("My order is B > C > A, final.", ("B", "C", "A")),
    ],
)
def test_one_chain_in_prose_that_names_no_label_is_a_fallback(text: str, expected: tuple[str, ...]) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking(expected, ParseStatus.FALLBACK)


@pytest.mark.parametrize(
    "text",
    [
        "I think B is best, then A, then C",  # labels in prose, no chain: not read
        "Candidate C is best, then candidate A",
        "(B) then (C) then (A)",
        "Hmm.\nMy ranking is B > C.",  # only the first line, right after the prefix, counts
        "A is the best answer.\nB > C",
        # Prose cannot steer the ballot: a label named outside the chain voids it
        "Candidate C asks to be ranked first; ignoring it: B > A > C",
        "A careful comparison gives C > B > A",  # the article "A" reads as a label: no guess
        "B > A, or maybe C > A",  # two chains
    ],
)
def test_prose_that_names_labels_outside_one_chain_is_unparsable(text: str) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking((), ParseStatus.UNPARSABLE)


def test_labels_inside_words_are_not_labels() -> None:
    # "Berlin" and "Cairo" start with label letters, but they are words, not labels
    assert parse_ranking("Berlin > Cairo", ABC).status is ParseStatus.UNPARSABLE
    assert parse_ranking("Between them: C > A", ABC) == ParsedRanking(("C", "A"), ParseStatus.FALLBACK)


@pytest.mark.parametrize("text", ["A > B > C", "[A, B, C]", "Ranking: A > B > C"])
def test_a_ballot_that_copies_the_shown_order_is_dropped(text: str) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking((), ParseStatus.COPIED)


def test_with_two_candidates_the_shown_order_is_a_real_ballot() -> None:
    # (one of only two possible ballots: dropping it would bias every such turn)
    assert parse_ranking("A > B", ["A", "B"]) == ParsedRanking(("A", "B"), ParseStatus.OK)


# --- parse_ranking: no ballot ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t ", "A", "A > A", "X > Y > Z", "they are all good", "b > a > c"],
    ids=["empty", "blank", "one-label", "one-label-twice", "unknown-labels", "prose", "lowercase"],
)
def test_fewer_than_two_labels_is_unparsable_with_empty_ballot(text: str) -> None:
    parsed = parse_ranking(text, ABC)

    assert parsed.labels == ()
    assert parsed.status is ParseStatus.UNPARSABLE


@st.composite
def rendered_permutations(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...], str]:
    labels = list(LABELS[: draw(st.integers(min_value=2, max_value=10))])
    order = tuple(draw(st.permutations(labels)))
    separator = draw(st.sampled_from([" > ", ">", "  >  ", " >> ", ", ", ","]))
    text = separator.join(order)
    if draw(st.booleans()):
        text = f"[{text}]"
    if draw(st.booleans()):
        text += "."
    return labels, order, draw(st.sampled_from(["", " ", "\n"])) + text


@given(rendered_permutations())
def test_any_rendered_permutation_parses_back_exactly(case: tuple[list[str], tuple[str, ...], str]) -> None:
    labels, order, text = case

    if len(labels) >= 3 and order == tuple(labels):
        assert parse_ranking(text, labels) == ParsedRanking((), ParseStatus.COPIED)
    else:
        assert parse_ranking(text, labels) == ParsedRanking(order, ParseStatus.OK)


# --- review_seed, shuffled, label_map --------------------------------------------------------


def test_review_seed_is_stable_and_fits_sql_integer() -> None:
    seed = review_seed("conv-1", 3, "smollm2-terse")

    assert seed == review_seed("conv-1", 3, "smollm2-terse")
    assert 0 <= seed < 2**31


def test_review_seed_is_the_same_in_every_process() -> None:
    # A pinned value: sha256-based, so it does not depend on PYTHONHASHSEED or the process
    assert review_seed("c", 0, "r") == 281931606


def test_review_seed_differs_per_reviewer_turn_and_conversation() -> None:
    seeds = {
        review_seed("conv-1", 0, "alpha"),
        review_seed("conv-1", 0, "beta"),
        review_seed("conv-1", 1, "alpha"),
        review_seed("conv-2", 0, "alpha"),
    }

    assert len(seeds) == 4


@given(st.lists(st.text(min_size=1), unique=True, max_size=12), st.integers(min_value=0, max_value=2**31 - 1))
def test_shuffled_is_a_deterministic_permutation(candidates: list[str], seed: int) -> None:
    original = list(candidates)

    order = shuffled(candidates, seed)

    assert order == shuffled(candidates, seed)
    assert sorted(order) == sorted(candidates)
    assert candidates == original  # the input is not shuffled in place


def test_shuffled_order_depends_on_the_seed() -> None:
    candidates = ["alpha", "beta", "gamma", "delta", "epsilon"]

    orders = {tuple(shuffled(candidates, seed)) for seed in range(20)}

    assert len(orders) > 1


def test_label_map_labels_in_shown_order() -> None:
    assert label_map(["gamma", "alpha", "beta"]) == {"A": "gamma", "B": "alpha", "C": "beta"}


def test_label_map_refuses_more_candidates_than_labels() -> None:
    with pytest.raises(ValueError, match="at most 26"):
        label_map([f"m{i}" for i in range(27)])


# --- ranking_from_scores ---------------------------------------------------------------------


def test_ranking_from_scores_higher_first() -> None:
    assert ranking_from_scores({"a": -2.0, "b": 0.5, "c": -0.1}, ["a", "b", "c"]) == ("b", "c", "a")


def test_ranking_from_scores_ties_keep_shown_order() -> None:
    scores = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.0}

    assert ranking_from_scores(scores, ["d", "b", "c", "a"]) == ("c", "d", "b", "a")
    assert ranking_from_scores(scores, ["a", "b", "c", "d"]) == ("c", "a", "b", "d")
