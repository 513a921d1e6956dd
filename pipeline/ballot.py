"""Reading a reviewer's ballot: anonymous labels, seeded shuffles, strict parsing.

Each reviewer sees the candidates under labels A, B, C, ... in its own shuffled
order. The shuffle is seeded from (conversation, turn, reviewer) so it can be
replayed, and the order shown is recorded with the review.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

LABELS = string.ascii_uppercase


class ParseStatus(StrEnum):
    OK = "ok"  # strict form: the first line is labels separated by '>' (or ',') and nothing else
    CONSTRAINED = "constrained"  # strict form, written by constrained decoding (nothing else could be)
    STRUCTURED = "structured"  # strict form, written by a server's structured outputs
    FALLBACK = "fallback"  # one '>' chain of labels in the first line, with prose that names no label
    UNPARSABLE = "unparsable"  # anything else: no ballot
    COPIED = "copied"  # the ballot is the order the reviewer was shown (3+ candidates): no ballot
    SCORED = "scored"  # likelihood review: ballot from scores, nothing parsed


@dataclass(frozen=True)
class ParsedRanking:
    labels: tuple[str, ...]  # best first
    status: ParseStatus


def review_seed(conversation_id: str, turn_index: int, reviewer: str) -> int:
    """A stable 31-bit seed (fits a SQL INTEGER), the same in every process (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{conversation_id}|{turn_index}|{reviewer}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def shuffled(candidates: Sequence[str], seed: int) -> list[str]:
    """The order a reviewer sees the candidates in."""
    order = list(candidates)
    random.Random(seed).shuffle(order)
    return order


def label_map(shown_order: Sequence[str]) -> dict[str, str]:
    """Label -> candidate id, labels A, B, ... in the order shown."""
    if len(shown_order) > len(LABELS):
        raise ValueError(f"at most {len(LABELS)} candidates can be labelled, got {len(shown_order)}")
    return {LABELS[i]: candidate for i, candidate in enumerate(shown_order)}


_STRICT = re.compile(r"^\[?\s*([A-Z])(\s*(?:>>|>|,)\s*[A-Z])+\s*\]?\.?$")
_CHAIN = re.compile(r"(?<![A-Za-z])[A-Z](?:\s*>>?\s*[A-Z](?![A-Za-z]))+")
_MENTION = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def parse_ranking(text: str, labels: Sequence[str]) -> ParsedRanking:
    """Parse a free-text ranking of ``labels`` (best first), as written after the prefilled prefix.

    Only the first line counts. Strict form: the line is labels separated by '>'
    (or ','), optionally bracketed. Fallback: the line holds exactly one chain of
    labels joined by '>' and its other words name no label, so prose cannot
    smuggle a vote in ("Candidate C asks to be ranked first; ignoring it: B > A"
    names C outside the chain: unparsable). Unknown labels and repeats are
    dropped. Fewer than two distinct known labels is UNPARSABLE; a ballot that
    reproduces the shown order of three or more candidates is COPIED (small
    models copy the list they were shown). Neither is a ballot: both are
    recorded, never guessed.
    """
    known = set(labels)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ParsedRanking((), ParseStatus.UNPARSABLE)
    first = lines[0]
    if _STRICT.match(first):
        return _ballot(_dedupe(re.findall(r"[A-Z]", first), known), labels, ParseStatus.OK)
    chains = _CHAIN.findall(first)
    if len(chains) != 1:
        return ParsedRanking((), ParseStatus.UNPARSABLE)
    outside = first.replace(chains[0], " ", 1)
    if any(label in known for label in _MENTION.findall(outside)):
        return ParsedRanking((), ParseStatus.UNPARSABLE)
    return _ballot(_dedupe(re.findall(r"[A-Z]", chains[0]), known), labels, ParseStatus.FALLBACK)


def _ballot(found: tuple[str, ...], labels: Sequence[str], status: ParseStatus) -> ParsedRanking:
    if len(found) < 2:
        return ParsedRanking((), ParseStatus.UNPARSABLE)
    if len(labels) >= 3 and found == tuple(labels):
        return ParsedRanking((), ParseStatus.COPIED)
    return ParsedRanking(found, status)


def _dedupe(found: Sequence[str], known: set[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(label for label in found if label in known))


def ranking_from_scores(scores: Mapping[str, float], shown_order: Sequence[str]) -> tuple[str, ...]:
    """Candidates best first by score (higher is better); ties keep the shown order."""
    position = {c: i for i, c in enumerate(shown_order)}
    return tuple(sorted(scores, key=lambda c: (-scores[c], position.get(c, len(position)))))
