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
        ("A > B > C", ("A", "B", "C")),
        ("[B, A, C]", ("B", "A", "C")),
        (" C>A>B.", ("C", "A", "B")),
        ("B >> C >> A", ("B", "C", "A")),
        ("C, B, A", ("C", "B", "A")),
        ("A > B > C\nBecause A is the most accurate.", ("A", "B", "C")),
    ],
)
def test_strict_forms_parse_ok(text: str, expected: tuple[str, ...]) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking(expected, ParseStatus.OK)


@pytest.mark.parametrize("text", ["[A, B, C, D]", "[A>B>C>D]", "A > B > C > D"])
def test_strict_form_keeps_first_and_last_items(text: str) -> None:
    # An earlier implementation stripped the brackets together with the first and last labels
    parsed = parse_ranking(text, ["A", "B", "C", "D"])

    assert parsed.labels == ("A", "B", "C", "D")
    assert parsed.status is ParseStatus.OK


def test_strict_form_may_be_partial() -> None:
    assert parse_ranking("B > D", ["A", "B", "C", "D"]) == ParsedRanking(("B", "D"), ParseStatus.OK)


def test_duplicates_and_unknown_labels_are_dropped() -> None:
    parsed = parse_ranking("B > B > Z > A > C > A", ABC)

    assert parsed.labels == ("B", "A", "C")
    assert parsed.status is ParseStatus.OK


# --- parse_ranking: fallback forms -----------------------------------------------------------


def test_fallback_reads_labels_in_order_of_appearance() -> None:
    # Given prose around the labels; the pronoun "I" is not one of the labels
    parsed = parse_ranking("I think B is best, then A, then C", ABC)

    # Then the labels come out in order of appearance, marked as a fallback parse
    assert parsed.labels == ("B", "A", "C")
    assert parsed.status is ParseStatus.FALLBACK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Candidate C is best, then candidate A", ("C", "A")),
        ("(B) then (C) then (A)", ("B", "C", "A")),
        ("Ranking: C > A > B", ("C", "A", "B")),  # the model repeated the prefilled prefix
        ("Hmm.\nMy ranking is B then C.", ("B", "C")),  # the first line naming labels decides
    ],
)
def test_fallback_forms(text: str, expected: tuple[str, ...]) -> None:
    assert parse_ranking(text, ABC) == ParsedRanking(expected, ParseStatus.FALLBACK)


def test_fallback_does_not_skip_a_line_that_names_a_label() -> None:
    # Given a reviewer that names its choice (A) on one line and dismisses the others on the next
    parsed = parse_ranking("A is the best answer.\nB and C are both wrong.", ABC)

    # Then no ballot is guessed: reading the second line would give B > C and put A last
    assert parsed == ParsedRanking((), ParseStatus.UNPARSABLE)


def test_fallback_does_not_read_labels_inside_words() -> None:
    # "Berlin" and "Cairo" start with label letters, but they are words, not labels
    assert parse_ranking("Berlin is right, Cairo is not", ABC).status is ParseStatus.UNPARSABLE


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
