"""Token usage: each call a task makes is metered, with the member's own tokenizer where it has one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.backend import Message, Prompt, ScoreRequest
from pipeline.records import CandidateRecord, ReviewRecord
from pipeline.usage import Metered, Usage, metered_record, turn_usage

PROMPT = Prompt((Message("system", "Answer briefly."), Message("user", "Who wrote Dune?")), prefill="A:")


class Plain:
    """A backend without a tokenizer (a server, the scripted member): estimated."""

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return ["Frank Herbert" for _ in prompts]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [-1.0 for _ in requests]


class Tokenizing(Plain):
    """A backend that holds a tokenizer (one token a word here) and renders a template."""

    def tokenizer(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": text.split()}

    def render(self, prompt: Prompt) -> str:
        return "<start> " + " ".join(m.content for m in prompt.messages) + " <assistant> " + prompt.prefill


def test_a_backend_with_a_tokenizer_is_counted_with_it_over_what_it_reads():
    metered = Metered(Tokenizing())  # type: ignore[arg-type]

    metered.generate([PROMPT, PROMPT])
    metered.score([ScoreRequest(PROMPT, "Frank Herbert")])

    # rendered: "<start> Answer briefly. Who wrote Dune? <assistant> A:" = 8 words, twice, then once
    # more with the 2-word continuation; written: "Frank Herbert" twice
    assert (metered.usage.prompt_tokens, metered.usage.completion_tokens) == (8 * 2 + 8 + 2, 2 * 2)
    assert metered.usage.counted == "tokenizer"


def test_a_backend_without_one_is_estimated():
    metered = Metered(Plain())  # type: ignore[arg-type]

    metered.generate([PROMPT])

    # "Answer briefly." 15 chars -> 4, "Who wrote Dune?" 15 -> 4, "A:" -> 1; "Frank Herbert" 13 -> 4
    assert (metered.usage.prompt_tokens, metered.usage.completion_tokens, metered.usage.counted) == (
        9,
        4,
        "estimate",
    )


def test_a_turns_usage_sums_its_records_and_the_fusion_per_member():
    metered = Metered(Tokenizing())  # type: ignore[arg-type]
    metered.generate([PROMPT])
    answer = metered_record(CandidateRecord("m0", text="Frank Herbert"), metered)
    ballot = ReviewRecord("m1", "ranking", "ok", prompt_tokens=30, completion_tokens=3)

    usage = turn_usage([answer, ballot], fusion=("m0", Usage(10, 5, "tokenizer")))

    assert usage["members"]["m0"] == {
        "prompt_tokens": 8 + 10,
        "completion_tokens": 2 + 5,
        "total_tokens": 25,
        "counted": "tokenizer",
    }
    assert usage["members"]["m1"]["counted"] == "estimate"
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["counted"]) == (48, 10, "mixed")
