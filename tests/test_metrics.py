"""Token F1 and exact match as the official CoQA and QuAC scorers define them (known values)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.evaluation.metrics import (
    CANNOTANSWER,
    best_exact,
    best_f1,
    exact_match,
    is_no_answer,
    normalize_answer,
    quac_references,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  An apple, a   pear and THE plum.", "apple pear and plum"),
        ("Theatre anthem", "theatre anthem"),  # articles only as whole words
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by a space
        ("the", ""),
    ],
)
def test_normalisation_is_the_official_one(text: str, normalised: str) -> None:
    assert normalize_answer(text) == normalised


def test_token_f1_known_values() -> None:
    # SQuAD/CoQA's worked definition: P = shared / predicted tokens, R = shared / gold tokens
    assert token_f1("Frank Herbert", "Herbert") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # 2/3
    assert token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 * (2 / 4) * 1.0 / (2 / 4 + 1))
    assert token_f1("in 1978", "1978") == pytest.approx(2 / 3)
    assert token_f1("Paris", "paris.") == 1.0
    assert token_f1("Rome", "Paris") == 0.0
    # repeated tokens count as a multiset: "a a b" vs "a b" shares 2 of 3 predicted tokens
    assert token_f1("x x y", "x y") == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1))


def test_empty_after_normalisation_scores_as_coqa() -> None:
    assert token_f1("The.", "the") == 1.0  # both empty: CoQA's int(gold_toks == pred_toks)
    assert token_f1("", "Paris") == 0.0
    assert token_f1("Paris", "") == 0.0


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The Hobbit.", "hobbit") == 1.0
    assert exact_match("The Hobbit, by Tolkien", "hobbit") == 0.0


def test_the_best_over_the_golds() -> None:
    golds = ["Leonardo da Vinci", "da Vinci"]
    assert best_f1("da Vinci", golds) == 1.0
    assert best_exact("Leonardo", golds) == 0.0
    assert best_f1("Leonardo", golds) == pytest.approx(2 * 1.0 * (1 / 3) / (1 + 1 / 3))
    assert best_f1("anything", []) == 0.0


def test_cannotanswer_as_quac_handle_cannot() -> None:
    # at least as many CANNOTANSWER as spans: only CANNOTANSWER is the reference
    assert quac_references([CANNOTANSWER]) == [CANNOTANSWER]
    assert quac_references([CANNOTANSWER, "a span"]) == [CANNOTANSWER]
    assert quac_references([CANNOTANSWER, "a span", "another"]) == ["a span", "another"]
    assert quac_references(["a span"]) == ["a span"]
    assert is_no_answer([CANNOTANSWER]) and not is_no_answer(["x", "y", CANNOTANSWER])


def test_a_no_answer_question_scores_only_the_literal_cannotanswer() -> None:
    assert best_f1(CANNOTANSWER, [CANNOTANSWER]) == 1.0
    assert best_exact(CANNOTANSWER, [CANNOTANSWER]) == 1.0
    assert best_f1("cannotanswer", [CANNOTANSWER]) == 0.0  # not normalised
    assert best_f1("There is no answer.", [CANNOTANSWER]) == 0.0
    # spans in the majority: CANNOTANSWER golds are dropped, spans score as usual
    assert best_f1("salt", ["salt", "pepper", CANNOTANSWER]) == 1.0
    assert best_f1(CANNOTANSWER, ["salt", "pepper", CANNOTANSWER]) == 0.0


@given(st.text(max_size=40), st.text(max_size=40))
def test_f1_is_symmetric_and_bounded(a: str, b: str) -> None:
    value = token_f1(a, b)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(token_f1(b, a))
    assert exact_match(a, b) <= value  # exact implies F1 = 1
