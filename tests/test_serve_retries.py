"""The endpoint asks each question once: retries, Idempotency-Keys and lost replies attach to the
turn already asked; the conversation is found by what the worker stored, not by who waited.

Through the real app (FastAPI's TestClient on ``create_api``) over the embedded deployment with
a scripted committee. Every test asks questions of its own (a tag), since the deployment and its
database are shared by the tests of one committee.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from db.models import Turn
from pipeline.service.client import BlendClient
from tests.conftest import scripted_committee
from tests.faults_support import wait_for
from workers.serve import ServerOptions, create_api

COMMITTEE = scripted_committee(3, name="retries")
SLOW = scripted_committee(
    3, name="retries-slow", member_options={f"m{i}": {"delay_s": 1.5} for i in range(3)}
)


@pytest.fixture
def client(embedded: Callable[..., BlendClient]) -> BlendClient:
    return embedded(COMMITTEE)


@pytest.fixture
def http(client: BlendClient) -> TestClient:
    return TestClient(create_api(client, ServerOptions()))


def _ask(http: TestClient, messages: list[str], **headers: str) -> Any:
    """POST a chat whose messages alternate user/assistant, starting with the user."""
    roles = ["user", "assistant"]
    body = {
        "model": COMMITTEE.name,
        "messages": [{"role": roles[i % 2], "content": text} for i, text in enumerate(messages)],
    }
    return http.post("/v1/chat/completions", content=json.dumps(body), headers=headers)


def _turn_of(response: Any) -> tuple[str, int, str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return (
        body["peerblend"]["conversation_id"],
        body["peerblend"]["turn_index"],
        body["choices"][0]["message"]["content"],
    )


def _questions(client: BlendClient, conversation_id: str) -> list[str]:
    with Session(client.store.engine) as session:
        turns = session.exec(
            select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.turn_index)
        )
        return [t.question for t in turns]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def test_a_retried_follow_up_gets_the_turn_it_asked(client, http):
    tag = _tag()
    first, follow_up = f"Who wrote Dune? {tag}", f"When was it published? {tag}"
    conversation, _, answer = _turn_of(_ask(http, [first]))

    asked = _turn_of(_ask(http, [first, answer, follow_up]))
    retried = _turn_of(_ask(http, [first, answer, follow_up]))

    assert asked[:2] == retried[:2] == (conversation, 1)
    assert retried[2] == asked[2]
    assert _questions(client, conversation) == [first, follow_up]  # asked once


def test_a_follow_up_continues_a_conversation_nobody_waited_for(client, http):
    # Given: a turn sent by a client that never waits for it (a crashed server, a 504)
    tag = _tag()
    chat = client.start(policy="full")
    chat.send(f"Who wrote Dune? {tag}")
    wait_for(
        "the worker stores the turn",
        lambda: not isinstance(client.store.progress(chat.conversation_id, 0), int),
        timeout=30,
    )
    answer = client.store.progress(chat.conversation_id, 0).answer  # type: ignore[union-attr]

    # When: the follow-up repeats the exchange so far
    conversation, turn_index, _ = _turn_of(_ask(http, [f"Who wrote Dune? {tag}", answer, f"And then? {tag}"]))

    # Then: it continues that conversation (the worker recorded its fingerprint with the turn)
    assert (conversation, turn_index) == (chat.conversation_id, 1)


def test_an_idempotency_key_asks_once(client, http):
    tag, key = _tag(), f"key-{uuid.uuid4()}"
    first = _turn_of(_ask(http, [f"Who wrote Dune? {tag}"], **{"Idempotency-Key": key}))
    again = _turn_of(_ask(http, [f"Who wrote Dune? {tag}"], **{"Idempotency-Key": key}))
    without = _turn_of(_ask(http, [f"Who wrote Dune? {tag}"]))

    assert again == first
    assert without[0] != first[0]  # the same first question without a key is a new conversation
    with Session(client.store.engine) as session:
        count = select(func.count()).select_from(Turn).where(Turn.request_key == key)
        assert session.exec(count).one() == 1


def test_a_twin_that_loses_the_race_for_its_key_leaves_no_empty_conversation(client, http, monkeypatch):
    # Given a first request with a key, and its twin racing it: the twin looked the key up before
    # the first stored its turn (simulated: its first lookup finds nothing), so it opens a
    # conversation of its own and then loses the key to the first
    from db.models import Conversation
    from workers.chat_ask import Ask

    tag, key = _tag(), f"key-{uuid.uuid4()}"
    first = _turn_of(_ask(http, [f"Who wrote Dune? {tag}"], **{"Idempotency-Key": key}))
    real, looked = Ask.by_key, []

    def late(self: Ask) -> Any:
        looked.append(key)
        return None if len(looked) == 1 else real(self)

    monkeypatch.setattr(Ask, "by_key", late)
    with Session(client.store.engine) as session:
        before = session.exec(select(func.count()).select_from(Conversation)).one()

    # When the twin arrives
    twin = _turn_of(_ask(http, [f"Who wrote Dune? {tag}"], **{"Idempotency-Key": key}))

    # Then it attaches to the first's turn, and the conversation it opened is gone
    assert twin == first and len(looked) == 2
    with Session(client.store.engine) as session:
        assert session.exec(select(func.count()).select_from(Conversation)).one() == before


def test_an_idempotency_key_reused_for_another_question_is_refused(client, http):
    key = f"key-{uuid.uuid4()}"
    conversation, _, _ = _turn_of(_ask(http, [f"Who wrote Dune? {_tag()}"], **{"Idempotency-Key": key}))

    response = _ask(http, [f"Who painted it? {_tag()}"], **{"Idempotency-Key": key})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"
    assert conversation in error["message"] and response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("key", ["", "with space", "tab\there", "x" * 256])
def test_a_malformed_idempotency_key_is_a_400_naming_it(http, key):
    response = _ask(http, [f"Who? {_tag()}"], **{"Idempotency-Key": key})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "Idempotency-Key"


def test_a_timed_out_turn_names_itself_and_a_retry_attaches_to_it(embedded):
    # Given: members that take 1.5 s and a server that waits 0.3 s
    client = embedded(SLOW)
    http = TestClient(create_api(client, ServerOptions(turn_timeout_s=0.3)))
    body = {"model": SLOW.name, "messages": [{"role": "user", "content": f"Who wrote Dune? {_tag()}"}]}
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    # When: the question times out
    timed_out = http.post("/v1/chat/completions", json=body, headers=key)

    # Then: 504 naming the turn, which a client can fetch (202 while it runs, 200 once stored)
    assert timed_out.status_code == 504
    error = timed_out.json()["error"]
    conversation, turn_index = error["conversation_id"], error["turn_index"]
    assert (turn_index, error["turn_url"]) == (0, f"/v1/conversations/{conversation}/turns/0")
    running = http.get(error["turn_url"])
    assert running.status_code == 202 and running.json()["status"] == "running"

    # When: the client retries with a longer wait; Then: it gets that turn, asked once
    patient = TestClient(create_api(client, ServerOptions(turn_timeout_s=60)))
    again = patient.post("/v1/chat/completions", json=body, headers=key)
    assert again.status_code == 200
    assert (again.json()["peerblend"]["conversation_id"], again.json()["peerblend"]["turn_index"]) == (
        conversation,
        0,
    )
    stored = http.get(error["turn_url"])
    assert (
        stored.status_code == 200
        and stored.json()["answer"] == again.json()["choices"][0]["message"]["content"]
    )
    assert len(_questions(client, conversation)) == 1


def test_an_unknown_turn_is_a_404(http):
    response = http.get("/v1/conversations/nope/turns/0")

    assert response.status_code == 404 and response.json()["error"]["code"] == "turn_not_found"
