"""The grammar of constrained ballots (pure): which token ids may come next, from which vocabulary."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ballot import LABELS, ParseStatus, parse_ranking
from pipeline.ballot_grammar import (
    MAX_BALLOT_CHOICES,
    BallotTokens,
    allowed_next,
    ballot_length,
    ballot_tokens,
    complete_ballots,
)

# A toy vocabulary in the shape of SmolLM2's and Gemma's: each label and '>' is one token
# both with a leading space and without; "Z" exists only as two pieces.
VOCAB = {" A": 10, "A": 11, " B": 20, "B": 21, " C": 30, "C": 31, " D": 40, "D": 41, " >": 5, ">": 6}
VOCAB |= {"<eos>": 2, " ": 99, "Z": 98}
TEXT = {i: t for t, i in VOCAB.items()}
END = 2


def encode(text: str) -> list[int]:
    if text in VOCAB:
        return [VOCAB[text]]
    return [VOCAB[" "], VOCAB[text.strip()]] if text.strip() in VOCAB else [VOCAB[" "]] * 3


def decode(token: int) -> str:
    return TEXT[token]


TOKENS = ballot_tokens(encode, decode, [END], labels="ABCDZ")


def test_each_label_and_the_separator_are_written_with_or_without_a_leading_space() -> None:
    assert TOKENS.labels["A"] == {10, 11}
    assert TOKENS.labels["D"] == {40, 41}
    assert TOKENS.separator == {5, 6}
    assert TOKENS.end == {END}


def test_a_label_the_vocabulary_splits_is_left_out_and_not_covered() -> None:
    # "Z" is one token, but " Z" is two: only the single-token form counts
    assert TOKENS.labels["Z"] == {98}
    split = ballot_tokens(lambda text: [1, 2] if "C" in text else encode(text), decode, [END], labels="ABC")

    assert not split.labels["C"]
    assert split.covers("AB") and not split.covers("ABC")


def test_a_piece_that_does_not_decode_back_to_itself_is_refused() -> None:
    # a tokenizer that maps "B" to the id of "A" (a wrong vocabulary) gives B no ids
    wrong = ballot_tokens(
        lambda text: [11] if text.strip() == "B" else encode(text), decode, [END], labels="AB"
    )

    assert not wrong.labels["B"]


def test_the_end_is_never_a_label_or_separator_token() -> None:
    odd = ballot_tokens(encode, decode, [10, 5], labels="AB")  # end ids that also write " A" and " >"

    assert odd.labels["A"] == {11} and odd.separator == {6}


def test_first_any_label_then_a_separator_then_an_unused_label() -> None:
    assert allowed_next(TOKENS, "ABC", []) == {10, 11, 20, 21, 30, 31}
    assert allowed_next(TOKENS, "ABC", [21]) == {5, 6}  # "B"
    assert allowed_next(TOKENS, "ABC", [21, 5]) == {10, 11, 30, 31}  # "B >": A or C
    assert allowed_next(TOKENS, "ABC", [21, 5, 30, 6]) == {10, 11}  # "B > C>": only A is left


def test_after_the_last_label_only_the_end() -> None:
    assert allowed_next(TOKENS, "ABC", [21, 5, 30, 6, 11]) == {END}
    assert allowed_next(TOKENS, "AB", [20, 5, 10]) == {END}


def test_an_end_or_an_id_off_the_grammar_ends_the_reply() -> None:
    assert allowed_next(TOKENS, "ABC", [20, END, END]) == {END}  # a finished row, padded with its end
    assert allowed_next(TOKENS, "ABC", [20, 20]) == {END}  # a label where '>' was due
    assert allowed_next(TOKENS, "ABC", [20, 5, 20]) == {END}  # a label used twice
    assert allowed_next(TOKENS, "ABC", [40]) == {END}  # a label not on this ballot


def test_only_the_labels_of_this_ballot_are_allowed() -> None:
    assert allowed_next(TOKENS, "BD", []) == {20, 21, 40, 41}


def test_complete_ballots_are_every_order_once() -> None:
    ballots = complete_ballots("ABC")

    assert len(ballots) == 6 == len(set(ballots))
    assert "C > A > B" in ballots
    assert all(parse_ranking(b, "ABC").status in (ParseStatus.OK, ParseStatus.COPIED) for b in ballots)


def test_too_many_labels_for_a_list_of_choices_are_refused() -> None:
    assert len(complete_ballots(LABELS[:6])) == MAX_BALLOT_CHOICES == math.factorial(6)
    with pytest.raises(ValueError, match="more than 720"):
        complete_ballots(LABELS[:7])


@given(
    n=st.integers(min_value=2, max_value=4),
    scores=st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=100, max_size=100),
)
def test_greedy_decoding_under_the_mask_always_writes_a_complete_strict_ballot(
    n: int, scores: list[float]
) -> None:
    # Given any scores a model might give (one fixed score per token id), and labels A.. of n
    labels = "ABCD"[:n]
    written: list[int] = []
    # When each step takes the best-scored allowed id (the model's choice among those allowed)
    for _ in range(ballot_length(labels) + 3):
        allowed = allowed_next(TOKENS, labels, written)
        written.append(max(sorted(allowed), key=lambda token: scores[token]))
    text = "".join(decode(t) for t in written if t != END)

    # Then the text is a strict ballot of every label, ended within its length, in the scores' order
    parsed = parse_ranking(text, labels)
    assert parsed.status in (ParseStatus.OK, ParseStatus.COPIED)
    if parsed.status is ParseStatus.OK:
        assert sorted(parsed.labels) == list(labels)
    assert written[ballot_length(labels) - 1] == END
    first = max(labels, key=lambda label: max(scores[t] for t in TOKENS.labels[label]))
    assert text.strip().startswith(first)


def test_covers_needs_a_separator_and_an_end() -> None:
    labels = {"A": frozenset({1}), "B": frozenset({2})}

    assert BallotTokens(labels, frozenset({3}), frozenset({4})).covers("AB")
    assert not BallotTokens(labels, frozenset(), frozenset({4})).covers("AB")
    assert not BallotTokens(labels, frozenset({3}), frozenset()).covers("AB")
