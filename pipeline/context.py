"""Conversation context given to the models: earlier turns and the passage, fitted
to a token budget.

Token counts are estimated (``estimate_tokens``: about four characters a token
for English), so budgets are approximate; backends truncate as a last resort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Exchange:
    """An earlier turn: the user's question and the *blended* answer it got."""

    question: str
    answer: str


def estimate_tokens(text: str) -> int:
    """Rough token count: ~4 characters per token, at least 1 for non-empty text."""
    return (len(text) + 3) // 4


def fit_history(history: Sequence[Exchange], budget_tokens: int) -> list[Exchange]:
    """The most recent exchanges that fit in ``budget_tokens``, oldest first.

    Recent turns matter most for follow-up questions, so older ones go first.
    """
    kept: list[Exchange] = []
    used = 0
    for exchange in reversed(history):
        cost = estimate_tokens(exchange.question) + estimate_tokens(exchange.answer)
        if used + cost > budget_tokens:
            break
        kept.append(exchange)
        used += cost
    return list(reversed(kept))


def fit_passage(passage: str | None, budget_tokens: int) -> str | None:
    """The passage, cut at a word boundary to about ``budget_tokens`` tokens."""
    if not passage or budget_tokens <= 0:
        return None
    limit = budget_tokens * 4
    if len(passage) <= limit:
        return passage
    cut = passage[:limit].rsplit(" ", 1)[0]
    return cut + " …"
