"""Token usage of a turn: every model call its tasks made, metered where the calls are made.

A turn makes many calls (each generator's answer, each review — a ranking written, or every
candidate scored twice —, each pairwise judgement, the fusion). ``Metered`` wraps the backend a
task hands to a stage and counts, for each call, the tokens read (the prompt, and for scoring
the continuation too) and written (the generated text). Counted with ``estimate_tokens``
(about 4 characters a token): the backends do not report token counts yet, and one estimate
for every member keeps a turn's sum comparable across backends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pipeline.backend import Backend, Prompt, ScoreRequest
from pipeline.context import estimate_tokens


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )

    def to_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def prompt_tokens(prompt: Prompt) -> int:
    return sum(estimate_tokens(m.content) for m in prompt.messages) + estimate_tokens(prompt.prefill)


class Metered:
    """``backend`` with every ``generate`` and ``score`` call's tokens added to ``usage``; any other
    attribute (``compare``, ``ballot_path``, ...) is the backend's own. One per task: not shared
    between threads."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.usage = Usage()

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        texts = self.backend.generate(prompts)
        self.usage += Usage(sum(map(prompt_tokens, prompts)), sum(map(estimate_tokens, texts)))
        return texts

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        values = self.backend.score(requests)
        read = sum(prompt_tokens(r.prompt) + estimate_tokens(r.continuation) for r in requests)
        self.usage += Usage(read, 0)
        return values

    def compare(self, context: str, first: str, second: str) -> float:
        value: float = self.backend.compare(context, first, second)  # type: ignore[attr-defined]
        self.usage += Usage(estimate_tokens(context) + estimate_tokens(first) + estimate_tokens(second), 0)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


R = TypeVar("R")


def metered_record(record: R, metered: Metered) -> R:
    """``record`` (a candidate, a review, a judgement) with the tokens its calls used."""
    usage = metered.usage
    return replace(record, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)  # type: ignore[type-var]


def turn_usage(records: Iterable[Any], fusion: tuple[str, Usage] | None = None) -> dict[str, Any]:
    """The turn's usage, in all and per member, from its records (candidates, reviews and
    judgements, each carrying ``prompt_tokens``/``completion_tokens`` and its member) and the
    fusion's (aggregator, usage): ``{"prompt_tokens", "completion_tokens", "total_tokens",
    "members": {name: ...}}``."""
    members: dict[str, Usage] = {}
    calls = [
        (
            getattr(r, "member", None) or getattr(r, "reviewer", None) or r.judge,
            Usage(r.prompt_tokens, r.completion_tokens),
        )
        for r in records
    ]
    for who, usage in [*calls, *([fusion] if fusion else [])]:
        members[who] = members.get(who, Usage()) + usage
    total = sum(members.values(), Usage())
    return {**total.to_json(), "members": {m: u.to_json() for m, u in sorted(members.items())}}
