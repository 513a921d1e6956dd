"""The LLM-Blender baseline's ranking: pairwise judgements and "max logits".

For N candidates every ordered pair (i, j) is judged: M[i][j] is the judge's
confidence that y_i beats y_j when y_i is shown first (M[i][i] = 0). Judging both
orders cancels the judge's position bias. The global score of candidate i is
s_i = sum over j != i of (M[i][j] - M[j][i]); higher is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.records import CandidateRecord


@dataclass(frozen=True)
class Judgement:
    """The judge's confidence that ``first`` beats ``second`` (shown in that order)."""

    judge: str
    first: str
    second: str
    p_first: float | None = None  # None when the pair could not be judged
    error: str | None = None
    seconds: float = 0.0
    finished_at: float = 0.0
    candidates: tuple[CandidateRecord, ...] = field(default_factory=tuple)
    prompt_tokens: int = 0  # what its model calls read and wrote (pipeline.usage)
    completion_tokens: int = 0
    tokens_counted: str = "estimate"  # or "tokenizer": the member's own

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = [c.to_json() for c in self.candidates]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Judgement:
        candidates = tuple(CandidateRecord.from_json(c) for c in data.get("candidates", ()))
        return cls(**{**data, "candidates": candidates})


def preference(logprob_a: float, logprob_b: float) -> float:
    """P(first) from the judge's log-probabilities of answering "A" and "B"."""
    top = max(logprob_a, logprob_b)
    a, b = math.exp(logprob_a - top), math.exp(logprob_b - top)
    return a / (a + b)


def max_logits(judgements: Sequence[Judgement], members: Sequence[str]) -> dict[str, float]:
    """s_i = sum_j (M[i][j] - M[j][i]) over the judged pairs; one score per member."""
    scores = dict.fromkeys(members, 0.0)
    for j in judgements:
        if j.p_first is None or j.first not in scores or j.second not in scores:
            continue
        scores[j.first] += j.p_first
        scores[j.second] -= j.p_first
    return scores


def pairwise_ranking(scores: dict[str, float], order: Sequence[str]) -> list[str]:
    """Members best first by score; ties keep ``order`` (the committee's)."""
    position = {m: i for i, m in enumerate(order)}
    return sorted(scores, key=lambda m: (-scores[m], position.get(m, len(position))))
