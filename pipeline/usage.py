"""Token usage of a turn: every model call its tasks made, metered where the calls are made.

A turn makes many calls (each generator's answer, each review — a ranking written, or every
candidate scored twice —, each pairwise judgement, the fusion). ``Metered`` wraps the backend a
task hands to a stage and counts, for each call, the tokens read (the prompt, and for scoring
the continuation too) and written (the generated text). A backend that holds its tokenizer
(the in-process transformers members: ``tokenizer`` and ``render``, the text the model really
reads, chat template included) is counted with it; any other (an OpenAI-compatible server, a
cross-encoder, the scripted test member) with ``estimate_tokens``, about 4 characters a token.
Each member's usage says which (``counted``).
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
    counted: str = ""  # "tokenizer", "estimate", "mixed" ("": nothing counted yet)

    def __add__(self, other: Usage) -> Usage:
        kinds = {self.counted, other.counted} - {""}
        counted = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            counted,
        )

    def to_json(self) -> dict[str, Any]:
        """OpenAI's usage object (its keys, in its order) and how it was counted: a report, not this
        record's fields (``total_tokens`` is derived, ``counted`` defaults), so not ``pipeline.wire``'s."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "counted": self.counted or "estimate",
        }


def prompt_tokens(prompt: Prompt) -> int:
    """A prompt's estimated tokens: its messages and prefill, without any template."""
    return sum(estimate_tokens(m.content) for m in prompt.messages) + estimate_tokens(prompt.prefill)


class Counter:
    """How one backend's tokens are counted: by its own tokenizer over what it really reads
    (``render``), or estimated."""

    def __init__(self, backend: Any) -> None:
        tokenizer, render = getattr(backend, "tokenizer", None), getattr(backend, "render", None)
        self.exact = callable(tokenizer) and callable(render)
        self._tokenizer, self._render = tokenizer, render

    def text(self, text: str) -> int:
        if not self.exact:
            return estimate_tokens(text)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[misc]

    def prompt(self, prompt: Prompt) -> int:
        return self.text(self._render(prompt)) if self.exact else prompt_tokens(prompt)  # type: ignore[misc]


class Metered:
    """``backend`` with every ``generate`` and ``score`` call's tokens added to ``usage``; any other
    attribute (``compare``, ``ballot_path``, ...) is the backend's own. One per task: not shared
    between threads."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.count = Counter(backend)
        self.usage = Usage(counted="tokenizer" if self.count.exact else "estimate")

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        texts = self.backend.generate(prompts)
        self.usage += Usage(sum(map(self.count.prompt, prompts)), sum(map(self.count.text, texts)))
        return texts

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        values = self.backend.score(requests)
        read = sum(self.count.prompt(r.prompt) + self.count.text(r.continuation) for r in requests)
        self.usage += Usage(read, 0)
        return values

    def compare(self, context: str, first: str, second: str) -> float:
        value: float = self.backend.compare(context, first, second)  # type: ignore[attr-defined]
        self.usage += Usage(sum(map(self.count.text, (context, first, second))), 0)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


R = TypeVar("R")


def metered_record(record: R, metered: Metered) -> R:
    """``record`` (a candidate, a review, a judgement) with the tokens its calls used."""
    usage = metered.usage
    return replace(  # type: ignore[type-var]
        record,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens_counted=usage.counted,
    )


def turn_usage(records: Iterable[Any], fusion: tuple[str, Usage] | None = None) -> dict[str, Any]:
    """The turn's usage, in all and per member, from its records (candidates, reviews and
    judgements, each carrying ``prompt_tokens``/``completion_tokens`` and its member) and the
    fusion's (aggregator, usage): ``{"prompt_tokens", "completion_tokens", "total_tokens",
    "members": {name: ...}}``."""
    members: dict[str, Usage] = {}
    calls = [
        (
            getattr(r, "member", None) or getattr(r, "reviewer", None) or r.judge,
            Usage(r.prompt_tokens, r.completion_tokens, r.tokens_counted),
        )
        for r in records
    ]
    for who, usage in [*calls, *([fusion] if fusion else [])]:
        members[who] = members.get(who, Usage()) + usage
    total = sum(members.values(), Usage())
    return {**total.to_json(), "members": {m: u.to_json() for m, u in sorted(members.items())}}
