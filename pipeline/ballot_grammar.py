"""Ballots that always count: what a ranking reviewer may write next, token by token (pure).

A ranking review with constrained decoding may write only a complete strict
ballot of the labels it was shown: a label not used yet, the separator '>', a
label not used yet, ... until every label is placed, then the end of the reply
(" B > A > C"). The model still picks greedily among the allowed tokens, so the
order is its own; only the form is forced.

``BallotTokens`` holds the token ids one tokenizer writes those pieces with,
each a single token: a label or the separator with or without a leading space,
whichever the model prefers (" B" and "B" are different tokens in both the
SmolLM2 and the Gemma vocabularies). ``allowed_next`` is the grammar over them.
A server's structured outputs take the same grammar as the list of every
complete ballot (``complete_ballots``).

``BallotPath`` names how a review's ballot was written; it is recorded with the
review (``pipeline.stages``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.ballot import LABELS

SEPARATOR = ">"
# A server's structured outputs are sent every complete ballot: n! strings. Six labels
# give 720; beyond that a reviewer writes free text.
MAX_BALLOT_CHOICES = math.factorial(6)


class BallotPath(StrEnum):
    """How a ranking review's ballot was written."""

    CONSTRAINED = "constrained"  # the backend's own decoder could write nothing but a complete ballot
    STRUCTURED = "structured"  # the server's structured outputs (guided choice or a JSON schema)
    PARSED = "parsed"  # free text, read by ``pipeline.ballot.parse_ranking``


@dataclass(frozen=True)
class BallotTokens:
    """The single-token ids one tokenizer writes a ballot with.

    ``labels``: label -> the ids that write it (with or without a leading space);
    ``separator``: the ids that write '>' (likewise); ``end``: the ids that end the
    reply (end of sequence / end of turn).
    """

    labels: Mapping[str, frozenset[int]]
    separator: frozenset[int]
    end: frozenset[int]

    def covers(self, labels: Sequence[str]) -> bool:
        """Whether every one of ``labels`` (and the separator, and an end) has a token here."""
        return bool(self.separator and self.end) and all(self.labels.get(label) for label in labels)


def ballot_tokens(
    encode: Callable[[str], Sequence[int]],
    decode: Callable[[int], str],
    end: Iterable[int],
    labels: Sequence[str] = tuple(LABELS),
) -> BallotTokens:
    """The ballot's tokens in one vocabulary, found by encoding each piece.

    ``encode``: text -> token ids, without special tokens; ``decode``: one id -> its
    text; ``end``: the ids that end a reply. A piece counts only where it encodes
    to one token that decodes back to it (spaces aside), so a tokenizer that splits
    a label leaves that label out (and ``covers`` says so) instead of a wrong id in.
    """

    def single(piece: str) -> frozenset[int]:
        ids: set[int] = set()
        for variant in (f" {piece}", piece):
            encoded = list(encode(variant))
            if len(encoded) == 1 and decode(encoded[0]).strip() == piece:
                ids.add(encoded[0])
        return frozenset(ids)

    ends = frozenset(end)
    by_label = {label: single(label) - ends for label in labels}
    return BallotTokens(by_label, single(SEPARATOR) - ends, ends)


def allowed_next(tokens: BallotTokens, labels: Sequence[str], written: Sequence[int]) -> frozenset[int]:
    """The ids that may follow ``written`` (the reply's ids so far) in a complete ballot of ``labels``.

    A label not used yet where a label is due, the separator after each label but
    the last, and only an end id once every label is placed. Ids off the grammar
    (which the mask never lets through) or an end already written also end the reply.
    """
    remaining = list(labels)
    label_due = True
    for token in written:
        if token in tokens.end:
            return tokens.end
        if label_due:
            label = next((label for label in remaining if token in tokens.labels.get(label, ())), None)
            if label is None:
                return tokens.end
            remaining.remove(label)
        elif token not in tokens.separator:
            return tokens.end
        label_due = not label_due
    if not remaining:
        return tokens.end
    if not label_due:
        return tokens.separator
    return frozenset().union(*(tokens.labels.get(label, frozenset()) for label in remaining))


def ballot_length(labels: Sequence[str]) -> int:
    """Tokens a complete ballot of ``labels`` takes under ``allowed_next``, its end included."""
    return 2 * len(labels)


def complete_ballots(labels: Sequence[str]) -> list[str]:
    """Every complete strict ballot of ``labels`` ("A > B > C", "A > C > B", ...), n! of them."""
    if math.factorial(len(labels)) > MAX_BALLOT_CHOICES:
        raise ValueError(f"{len(labels)} labels make more than {MAX_BALLOT_CHOICES} ballots")
    return [f" {SEPARATOR} ".join(order) for order in itertools.permutations(labels)]
