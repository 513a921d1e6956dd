"""The endpoint's promises about refusals: a refused request stores nothing, every error
is OpenAI-shaped, known fields are typed strictly.

Through the real app (FastAPI's TestClient on ``create_api``) over the embedded
deployment with a scripted committee; the database is counted before and after each
refused request. The Python client's ``start`` + ``ask`` path is held to the same rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from db.models import Conversation, Turn
from pipeline.errors import InputError
from pipeline.service.client import BlendClient
from tests.conftest import scripted_committee
from workers.serve import ServerOptions, create_api

COMMITTEE = scripted_committee(3, name="refusals")
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def client(embedded: Callable[..., BlendClient]) -> BlendClient:
    return embedded(COMMITTEE)


@pytest.fixture
def http(client: BlendClient) -> TestClient:
    return TestClient(create_api(client, ServerOptions()))


def _stored(client: BlendClient) -> tuple[int, int]:
    """(conversations, turns) in the database."""
    with Session(client.store.engine) as session:
        conversations = session.exec(select(func.count()).select_from(Conversation)).one()
        turns = session.exec(select(func.count()).select_from(Turn)).one()
    return conversations, turns


def _error(response: Any, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a response, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    error: dict[str, Any] = body["error"]
    return error


def _post(http: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """POST a chat request as the SDKs send it: ASCII JSON, so a lone surrogate travels as \\ud800."""
    headers = {"content-type": "application/json", **(headers or {})}
    return http.post("/v1/chat/completions", content=json.dumps(body), headers=headers)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# --- item 6: a refused request stores nothing ---------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "fragments"),
    [
        ([_user("x" * 9000)], ["question", "9,000 characters", "the limit is 8,000"]),
        ([_user("Who wrote\x00 Dune?")], ["question", "NUL"]),
        ([_user("Who wrote \ud800 Dune?")], ["question", "lone surrogate"]),
        (
            [{"role": "system", "content": "s" * 9000}, _user("Who wrote Dune?")],
            ["system message", "the limit is 8,000"],
        ),
        (
            [{"role": "system", "content": "Be\x00 brief."}, _user("Who wrote Dune?")],
            ["system message", "NUL"],
        ),
        (
            [_user("q" * 9000), {"role": "assistant", "content": "a"}, _user("And then?")],
            ["history question 1", "the limit is 8,000"],
        ),
        (
            [_user("Who?"), {"role": "assistant", "content": "Frank\x00"}, _user("When?")],
            ["history answer 1", "NUL"],
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_request_stores_nothing(client, http, messages, fragments, stream):
    before = _stored(client)

    response = _post(http, {"model": "refusals", "messages": messages, "stream": stream})

    error = _error(response, 400)
    assert all(fragment in error["message"] for fragment in fragments), error
    assert error["param"] == "messages" and error["type"] == "invalid_request_error"
    assert _stored(client) == before  # no conversation, no turn


def test_a_refused_question_to_a_named_conversation_adds_no_turn(client, http):
    # Given: a conversation with one answered turn
    first = _post(http, {"model": "refusals", "messages": [_user("Who wrote Dune?")]})
    conversation_id = first.json()["peerblend"]["conversation_id"]
    before = _stored(client)

    # When: the next question, naming it, is over the limit
    response = _post(
        http,
        {"model": "refusals", "messages": [_user("x" * 9000)], "conversation_id": conversation_id},
    )

    # Then: refused, and the conversation still has its one turn
    assert "the limit is 8,000" in _error(response, 400)["message"]
    assert _stored(client) == before
    assert len(client.fetch(conversation_id).turns) == 1


@pytest.mark.parametrize(
    ("body", "header", "param"),
    [
        ({"conversation_id": "abc\x00def"}, {}, "conversation_id"),
        ({"conversation_id": "../etc"}, {}, "conversation_id"),
        ({}, {"X-Peerblend-Conversation": "a b"}, "X-Peerblend-Conversation"),
    ],
)
def test_a_malformed_conversation_id_is_refused_naming_it(client, http, body, header, param):
    before = _stored(client)
    response = _post(
        http,
        {"model": "refusals", "messages": [_user("Who wrote Dune?")], **body},
        headers=header,
    )
    assert _error(response, 400)["param"] == param
    assert _stored(client) == before


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("x" * 9000, "the limit is 8,000"),
        ("a\x00b", "NUL"),
        ("a\ud800b", "lone surrogate"),
        ("  ", "empty"),
        (3, "string"),
    ],
)
def test_the_python_client_refuses_a_bad_question_leaving_no_turn(client, question, message):
    # Given: a live conversation started explicitly (it stays: it was asked for)
    chat = client.start(history=[("Who wrote Dune?", "Frank Herbert")])
    before = _stored(client)

    # When / Then: asking a question the limits refuse raises, and stores nothing
    with pytest.raises(InputError, match=message):
        chat.ask(question, timeout=30)
    assert _stored(client) == before
    assert chat.ask("When was it published?", timeout=30).turn_index == 0  # the next good one is turn 0


# --- item 7: every error in OpenAI's shape; strict known fields ---------------------------------


def test_deeply_nested_json_is_a_400_in_openais_shape(client, http):
    before = _stored(client)
    response = http.post(
        "/v1/chat/completions", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    error = _error(response, 400)
    assert "not valid JSON" in error["message"] and error["type"] == "invalid_request_error"
    assert _stored(client) == before


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"{not json", "not valid JSON"), (b"\xff\xfe\x00", "not valid JSON"), (b"[]", "the body")],
)
def test_a_body_that_is_no_request_object_is_a_400(http, content, fragment):
    response = http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert fragment in _error(response, 400)["message"]


def test_unknown_paths_and_wrong_methods_keep_their_status_in_openais_shape(http):
    missing = _error(http.get("/v1/nope"), 404)
    assert "GET /v1/nope" in missing["message"]
    assert "POST /v1/nope" in _error(http.post("/v1/nope", json={}), 404)["message"]

    wrong = http.get("/v1/chat/completions")
    error = _error(wrong, 405)
    assert "GET /v1/chat/completions" in error["message"] and "POST" in error["message"]
    assert wrong.headers["allow"] == "POST"
    _error(http.post("/v1/models"), 405)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "yes"),
        ("stream", 1),
        ("stream", "true"),
        ("model", 3),
        ("messages", "Who wrote Dune?"),
        ("messages", [{"role": "user", "content": 3}]),
        ("messages", [{"role": "robot", "content": "hi"}]),
        ("conversation_id", 42),
    ],
)
def test_a_wrongly_typed_known_field_is_a_400_naming_it(client, http, field, value):
    before = _stored(client)
    body: dict[str, Any] = {"model": "refusals", "messages": [_user("Who wrote Dune?")], field: value}

    error = _error(_post(http, body), 400)

    assert error["param"] == field and field in error["message"], error
    assert _stored(client) == before


@pytest.mark.parametrize("stream", [False, None])
def test_stream_false_or_null_is_an_ordinary_completion(http, stream):
    response = _post(
        http,
        {"model": "refusals", "messages": [_user("Who wrote Dune?")], "stream": stream},
    )
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"


def test_an_unexpected_failure_is_a_500_in_openais_shape(client, monkeypatch):
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("workers.serve._completion", broken)
    http = TestClient(create_api(client, ServerOptions()), raise_server_exceptions=False)

    response = _post(http, {"model": "refusals", "messages": [_user("Who?")]})

    error = _error(response, 500)
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]


def test_a_new_chat_asks_the_broker_about_its_queues_once(client, http, monkeypatch):
    # Given a deployment that counts its queue checks (distributed mode asks the broker each time)
    checks: list[str] = []
    monkeypatch.setattr(client, "queue_check", lambda queues, default: checks.append(default))

    # When a new chat is asked, and then continued
    first = _post(http, {"model": "refusals", "messages": [_user("Who wrote Dune?")]})
    assert first.status_code == 200, first.text
    once = len(checks)
    answer = first.json()["choices"][0]["message"]["content"]
    history = [_user("Who wrote Dune?"), {"role": "assistant", "content": answer}, _user("When?")]
    assert _post(http, {"model": "refusals", "messages": history}).status_code == 200

    # Then each question cost one check
    assert (once, len(checks)) == (1, 2)
