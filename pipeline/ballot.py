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
    OK = "ok"  # strict form: labels separated by '>' (or ',') and nothing else
    FALLBACK = "fallback"  # labels recovered from looser text
    UNPARSABLE = "unparsable"  # fewer than two distinct labels: no ballot
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


_STRICT = re.compile(r"^\[?\s*([A-Z])(\s*(?:>|,|>>)\s*[A-Z])*\s*\]?\.?$")
_LABEL = re.compile(r"(?<![A-Za-z])(?:\[|\(|Candidate\s+|candidate\s+)?([A-Z])(?![a-z])")


def parse_ranking(text: str, labels: Sequence[str]) -> ParsedRanking:
    """Parse a free-text ranking of ``labels`` (best first).

    Strict form first: the first line is a list of labels separated by '>' or
    ','. Fallback: the labels in order of first appearance in the first line that
    mentions any. Unknown labels and repeats are dropped. Fewer than two distinct
    known labels is UNPARSABLE (an empty ballot: it is recorded, never guessed).
    """
    known = set(labels)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ParsedRanking((), ParseStatus.UNPARSABLE)
    first = lines[0]
    if _STRICT.match(first):
        found = _dedupe(re.findall(r"[A-Z]", first), known)
        if len(found) >= 2:
            return ParsedRanking(found, ParseStatus.OK)
    for line in lines:
        found = _dedupe(_LABEL.findall(line), known)
        if found:  # the first line naming any label decides; one label is not a ranking
            if len(found) >= 2:
                return ParsedRanking(found, ParseStatus.FALLBACK)
            break
    return ParsedRanking((), ParseStatus.UNPARSABLE)


def _dedupe(found: Sequence[str], known: set[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(label for label in found if label in known))


def ranking_from_scores(scores: Mapping[str, float], shown_order: Sequence[str]) -> tuple[str, ...]:
    """Candidates best first by score (higher is better); ties keep the shown order."""
    position = {c: i for i, c in enumerate(shown_order)}
    return tuple(sorted(scores, key=lambda c: (-scores[c], position.get(c, len(position)))))
