"""The chat request's fields do what they say, or are refused naming the field: never silently
ignored. Through the real app with the official openai SDK (its httpx client is FastAPI's
TestClient), over the embedded deployment with a scripted committee (a word is a token there)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from pipeline.service.client import BlendClient
from tests.conftest import scripted_committee
from workers.serve import ServerOptions, create_api

COMMITTEE = scripted_committee(3, name="fields")


@pytest.fixture
def sdk(embedded: Callable[..., BlendClient]) -> openai.OpenAI:
    http = TestClient(create_api(embedded(COMMITTEE), ServerOptions()))
    return openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)


def _ask(sdk: openai.OpenAI, question: str, **fields: Any) -> Any:
    return sdk.chat.completions.create(
        model=COMMITTEE.name, messages=[{"role": "user", "content": question}], **fields
    )


def test_max_tokens_bounds_the_answer(sdk):
    question = f"Who wrote the novel Dune in 1965? {uuid.uuid4().hex[:6]}"
    free = _ask(sdk, question).choices[0]
    bounded = _ask(sdk, question, max_tokens=2).choices[0]
    newer = _ask(sdk, question, max_completion_tokens=3).choices[0]

    # (which member wins varies: the scripted rankers shuffle by conversation)
    assert len(free.message.content.split()) > 3 and free.message.content.endswith(question)
    assert re.fullmatch(r"model\d: Who", bounded.message.content), bounded
    assert re.fullmatch(r"model\d: Who wrote", newer.message.content), newer
    # and the caller is told which answers were cut (the scripted members write a word a token)
    assert [free.finish_reason, bounded.finish_reason, newer.finish_reason] == ["stop", "length", "length"]


def test_a_streamed_answer_cut_at_max_tokens_ends_with_length(sdk):
    question = f"Who wrote the novel Dune in 1965? {uuid.uuid4().hex[:6]}"
    chunks = list(
        sdk.chat.completions.create(
            model=COMMITTEE.name, messages=[{"role": "user", "content": question}], max_tokens=2, stream=True
        )
    )

    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["length"]


def test_a_stop_sequence_ends_the_answer_before_it(sdk):
    answer = _ask(sdk, f"Who wrote Dune, then? {uuid.uuid4().hex[:6]}", stop=[","]).choices[0].message.content

    assert answer.endswith("Who wrote Dune") and "," not in answer


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_what_a_blend_cannot_give_is_refused_naming_the_field(sdk, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(sdk, f"Who? {uuid.uuid4().hex[:6]}", **fields)

    assert refused.value.body["param"] == param  # type: ignore[index]


def test_accepted_plain_values_of_those_fields(sdk):
    reply = _ask(sdk, f"Who? {uuid.uuid4().hex[:6]}", n=1, response_format={"type": "text"}, logprobs=False)

    assert len(reply.choices) == 1


def test_a_model_is_retrieved_by_id(sdk):
    assert sdk.models.retrieve(f"{COMMITTEE.name}:p1").id == f"{COMMITTEE.name}:p1"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_usage_counts_every_model_call_of_the_turn(sdk):
    question = f"Who wrote Dune? {uuid.uuid4().hex[:6]}"
    reply = _ask(sdk, question)

    usage, members = reply.usage, reply.model_extra["peerblend"]["usage"]
    # Every member answered and reviewed (3 answers, 3 reviews: each read every candidate)
    assert set(members) == {"m0", "m1", "m2"}
    assert all(m["prompt_tokens"] > 0 and m["completion_tokens"] > 0 for m in members.values())
    assert usage.prompt_tokens == sum(m["prompt_tokens"] for m in members.values())
    assert usage.completion_tokens == sum(m["completion_tokens"] for m in members.values())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # far more than the question and the chosen answer alone
    assert usage.prompt_tokens > 3 * len(question) // 4


def test_a_stream_shows_each_candidate_and_ballot_then_the_answer_then_the_usage(sdk):
    question = f"Who wrote Dune? {uuid.uuid4().hex[:6]}"
    chunks = list(_ask(sdk, question, stream=True, stream_options={"include_usage": True}))

    events = [c for c in chunks if "event" in (c.model_extra.get("peerblend") or {})]
    progress = [c.model_extra["peerblend"] for c in events]
    assert all(c.choices[0].delta.content is None for c in events)  # nothing for a plain client
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert {(e["event"], e["member"]) for e in progress} == {
        (kind, m) for kind in ("candidate", "ballot") for m in ("m0", "m1", "m2")
    }
    assert [e["event"] for e in progress].index("ballot") >= 3  # every candidate before any ballot
    assert len(texts) == 1 and texts[0].endswith(question)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0 and not chunks[-1].choices


def test_langchain_calls_it_unchanged_and_its_fields_hold(embedded):
    from langchain_openai import ChatOpenAI

    http = TestClient(create_api(embedded(COMMITTEE), ServerOptions()))
    chat = ChatOpenAI(
        base_url="http://testserver/v1", api_key="none", model=COMMITTEE.name, http_client=http, max_retries=0
    )
    question = f"Who wrote the novel Dune? {uuid.uuid4().hex[:6]}"

    free = chat.invoke(question)
    bounded = chat.bind(max_tokens=2).invoke(question)
    streamed = "".join(str(piece.content) for piece in chat.stream(question))

    assert free.content.endswith(question)  # type: ignore[union-attr]
    assert re.fullmatch(r"model\d: Who", str(bounded.content))
    assert free.usage_metadata is not None and free.usage_metadata["input_tokens"] > len(question) // 4
    assert re.fullmatch(rf"model\d: {re.escape(question)}", streamed)
    with pytest.raises(Exception, match="n must be 1"):
        chat.bind(n=2).invoke(question)
