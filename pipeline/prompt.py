"""The prompt shape every backend consumes: chat messages plus an answer prefix.

Prompt builders (``pipeline.prompts``) produce these; backends render them either
with the model's chat template or, for base models without one, as a plain
transcript (``render_transcript``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """A chat prompt. ``prefill`` is text the model's answer is forced to start with."""

    messages: tuple[Message, ...]
    prefill: str = ""
    max_new_tokens: int = 48
    stop: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "prefill": self.prefill,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``continuation`` as the model's answer to ``prompt``.

    The backend returns the mean log-probability per token (natural log, <= 0)
    of ``continuation`` following the rendered prompt (prefill included).
    """

    prompt: Prompt
    continuation: str


def render_transcript(prompt: Prompt) -> str:
    """Render a prompt as plain text for base models that have no chat template.

    System text comes first, then alternating ``User:`` / ``Assistant:`` lines; the
    text ends with ``Assistant:`` and the prefill, where the model continues.
    """
    lines: list[str] = []
    for message in prompt.messages:
        if message.role == "system":
            lines.append(message.content.strip())
            lines.append("")
        elif message.role == "user":
            lines.append(f"User: {message.content.strip()}")
        else:
            lines.append(f"Assistant: {message.content.strip()}")
    prefix = "Assistant:" + (" " + prompt.prefill if prompt.prefill else "")
    return "\n".join(lines + [prefix])


class Backend(Protocol):
    """What the pipeline needs of a model; ``workers.backends`` implements it."""

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy continuation of each prompt after its prefill (prefill not included)."""
        ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean per-token log-probability of each continuation (natural log, <= 0)."""
        ...
