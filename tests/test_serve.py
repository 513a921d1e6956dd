"""``peerblend serve`` as a real uvicorn process, called with the official openai SDK.

Embedded default (one process: server, in-process worker, SQLite) with a scripted
committee, and once with the real offline SmolLM2; then distributed (the server plus a
real ``celery worker`` on Redis and PostgreSQL). Chat-protocol mapping (messages ->
conversation, model ids) is tested without a server at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import scripted_committee, smollm2_committee
from tests.faults_support import free_port, stop_process, wait_for
from workers.chat import ChatError, ChatMessage, conversation_of, model_ids, parse_model

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-1"


def _likelihood_committee(name: str) -> Any:
    """Scripted members reviewing by likelihood with fixed scores: m0 > m1 > m2."""
    base = scripted_committee(3, name=name)
    scores = {"scores": {"model0": -0.1, "model1": -0.2, "model2": -0.3}}
    members = tuple(
        m.model_copy(update={"review_method": "likelihood", "options": scores}) for m in base.members
    )
    return base.model_copy(update={"members": members})


class Server:
    def __init__(self, env: dict[str, str], home: Path, *, startup_s: float = 90) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = home / "serve.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("peerblend serve answers", up, timeout=startup_s)

    def client(self, key: str = KEY, timeout: float = 120) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=timeout)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url, api_key=KEY, max_retries=0, timeout=120)


def embedded_env(home: Path, committee_file: Path, **extra: str) -> dict[str, str]:
    """This process's environment for an embedded ``peerblend serve``: none of its PEERBLEND_
    settings but the test backends, a home and a committee of the test's own."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PEERBLEND_") or k == "PEERBLEND_TEST_BACKENDS"
    }
    return {**kept, "PEERBLEND_HOME": str(home), "PEERBLEND_COMMITTEE_FILE": str(committee_file), **extra}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    home = tmp_path_factory.mktemp("serve")
    committee_file = home / "committee.json"
    committee_file.write_text(_likelihood_committee("blend").model_dump_json())
    env = embedded_env(
        home, committee_file, PEERBLEND_API_KEYS=f"{KEY},another-key", PEERBLEND_EMBEDDED_CONCURRENCY="16"
    )
    server = Server(env, home)
    engine = create_engine(f"sqlite:///{home / 'peerblend.db'}")
    yield server, engine
    stop_process(server.process)
    engine.dispose()


def test_a_chat_completion_is_the_blended_answer_with_what_the_blend_did(served):
    server, _ = served

    completion = server.client().chat.completions.create(
        model="blend", messages=[{"role": "user", "content": "Who wrote Dune?"}]
    )

    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == "model0: Who wrote Dune?"  # m0 ranks first with these scores
    assert completion.usage is not None and completion.usage.total_tokens > 0
    extension = completion.model_extra["peerblend"]
    assert extension["chosen"] == "m0" and extension["ranking"][0] == "m0"
    assert {c["member"] for c in extension["candidates"]} == {"m0", "m1", "m2"}
    assert extension["turn_index"] == 0 and "total_s" in extension["timings"]
    assert extension["decided_by"].startswith("Borda count of")  # which rule decided, in one sentence


def test_a_three_request_chat_continues_one_conversation_under_its_policy(served):
    server, engine = served
    client = server.client()
    messages: list[dict[str, str]] = [{"role": "system", "content": "Be brief."}]
    seen = []
    for question in ["Who wrote Dune?", "When was it published?", "What came next?"]:
        messages.append({"role": "user", "content": f"{question} {uuid.uuid4().hex[:6]}"})
        completion = client.chat.completions.create(model="blend:p2", messages=messages)
        seen.append(completion.model_extra["peerblend"])
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})

    # Then: one stored conversation, three turns, p2 applied (turn 2 reuses turn 1's top member)
    assert len({s["conversation_id"] for s in seen}) == 1
    assert [s["turn_index"] for s in seen] == [0, 1, 2]
    assert [s["decision"]["ranked"] for s in seen] == [True, False, True]
    with engine.connect() as connection:
        row = connection.execute(
            text("select n_turns, policy, live, system from conversation where id = :id"),
            {"id": seen[0]["conversation_id"]},
        ).one()
        assert tuple(row) == (3, "p2", 1, "Be brief.")


def test_an_explicit_conversation_id_continues_that_conversation(served):
    server, _ = served
    client = server.client()
    first = client.chat.completions.create(
        model="blend", messages=[{"role": "user", "content": "Who wrote Emma?"}]
    )
    conversation_id = first.model_extra["peerblend"]["conversation_id"]

    again = client.chat.completions.create(
        model="blend",
        messages=[{"role": "user", "content": "When?"}],
        extra_body={"conversation_id": conversation_id},
    )

    assert again.model_extra["peerblend"]["conversation_id"] == conversation_id
    assert again.model_extra["peerblend"]["turn_index"] == 1


def test_streaming_sends_the_role_then_the_answer_then_done(served):
    server, _ = served

    stream = server.client().chat.completions.create(
        model="blend", messages=[{"role": "user", "content": "Who wrote Solaris?"}], stream=True
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "model0: Who wrote Solaris?"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["peerblend"]["chosen"] == "m0"


def test_the_async_sdk_and_32_chats_at_once(served):
    server, _ = served

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        completion = await client.chat.completions.create(
            model="blend", messages=[{"role": "user", "content": f"question number {i}?"}]
        )
        return completion.choices[0].message.content or ""

    async def main() -> list[str]:
        async with server.async_client() as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    answers = asyncio.run(main())

    assert answers == [f"model0: question number {i}?" for i in range(32)]


def test_models_lists_the_committee_and_its_variants(served):
    server, _ = served

    ids = [m.id for m in server.client().models.list()]

    assert ids[0] == "blend" and {
        "blend:p1",
        "blend:p2",
        "blend:p3",
        "blend:pairwise",
        "blend:single:m1",
    } <= set(ids)


@pytest.mark.parametrize(
    ("request_kwargs", "error", "fragment"),
    [
        (
            {"model": "blend", "messages": [{"role": "assistant", "content": "hi"}]},
            openai.BadRequestError,
            "last message",
        ),
        (
            {"model": "blend", "messages": [{"role": "user", "content": "x" * 9000}]},
            openai.BadRequestError,
            "8,000",
        ),
        (
            {"model": "nope", "messages": [{"role": "user", "content": "q?"}]},
            openai.NotFoundError,
            "not served",
        ),
        ({"model": "blend", "messages": []}, openai.BadRequestError, "messages"),
    ],
)
def test_errors_arrive_as_the_sdks_typed_exceptions(served, request_kwargs, error, fragment):
    server, _ = served
    with pytest.raises(error) as raised:
        server.client().chat.completions.create(**request_kwargs)
    assert fragment in raised.value.message


def test_a_wrong_or_missing_key_is_refused(served):
    server, _ = served
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").chat.completions.create(
            model="blend", messages=[{"role": "user", "content": "q?"}]
        )
    assert httpx.get(server.url + "/models").status_code == 401


def test_a_refused_request_stores_nothing_and_every_error_is_openai_shaped(served):
    server, engine = served
    client = server.client()

    def stored() -> tuple[int, int]:
        with engine.connect() as connection:
            return (
                connection.execute(text("select count(*) from conversation")).scalar_one(),
                connection.execute(text("select count(*) from turn")).scalar_one(),
            )

    before = stored()
    # A question over PEERBLEND_MAX_QUESTION_CHARS, or holding a NUL: 400 naming it, nothing stored
    for content, fragment in [("x" * 9000, "the limit is 8,000"), ("Who\x00?", "NUL")]:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="blend", messages=[{"role": "user", "content": content}])
        assert fragment in raised.value.message and "question" in raised.value.message
    # A known field of the wrong type is refused naming it ("yes" is not true)
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(
            model="blend", messages=[{"role": "user", "content": "q?"}], extra_body={"stream": "yes"}
        )
    assert stored() == before

    # Deep JSON, an unknown path, a wrong method: OpenAI's error shape, the status kept
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for response, status in [
        (httpx.post(server.url + "/chat/completions", content=b"[" * 100_000, headers=auth), 400),
        (httpx.get(server.url + "/nope", headers=auth), 404),
        (httpx.get(server.url + "/chat/completions", headers=auth), 405),
    ]:
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# --- a real offline model behind the endpoint ---------------------------------------------------


@pytest.mark.real_model
def test_a_real_offline_model_answers_through_serve(tmp_path):
    # Given: peerblend serve (embedded) with a committee of the offline SmolLM2-135M, short answers
    committee = smollm2_committee("real-serve")
    home = tmp_path / "home"
    home.mkdir()
    (home / "committee.json").write_text(committee.model_dump_json())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PEERBLEND_")},
        "PEERBLEND_HOME": str(home),
        "PEERBLEND_COMMITTEE_FILE": str(home / "committee.json"),
        "PEERBLEND_API_KEYS": KEY,
        "HF_HUB_OFFLINE": "1",
    }
    server = Server(env, home, startup_s=600)  # the worker loads the model first (converts it once)
    try:
        # When: the openai SDK asks one short question
        completion = server.client(timeout=600).chat.completions.create(
            model="real-serve", messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
    finally:
        stop_process(server.process)

    # Then: a non-empty blended answer, one of the model's candidates, with what the blend did
    answer = completion.choices[0].message.content
    assert answer and answer.strip()
    extension = completion.model_extra["peerblend"]
    candidates = {c["member"]: c for c in extension["candidates"]}
    assert set(candidates) == {"smol-a", "smol-b"}
    assert all(c["error"] is None and c["text"] for c in candidates.values())
    assert extension["chosen"] in candidates and answer == candidates[extension["chosen"]]["text"]


# --- distributed: the server plus a real worker on Redis and PostgreSQL -----------------------


@pytest.mark.services
def test_distributed_serve_with_a_real_worker(postgres_url, tmp_path):
    from tests.faults_support import Deployment

    tag = uuid.uuid4().hex[:8]
    committee = _likelihood_committee(f"dist-{tag}")
    members = tuple(m.model_copy(update={"queue": f"s{tag}.{m.name}"}) for m in committee.members)
    committee = committee.model_copy(update={"members": members})
    home = tmp_path / "home"
    home.mkdir()
    redis_url = os.environ.get("PEERBLEND_TEST_REDIS", "redis://127.0.0.1:6379")
    deployment = Deployment(
        home, committee, tag=tag, broker=f"{redis_url}/0", backend=f"{redis_url}/1", database=postgres_url
    )
    try:
        deployment.start_worker()
        server = Server({**deployment.env, "PEERBLEND_API_KEYS": KEY}, home)
        try:
            client = server.client()
            first = client.chat.completions.create(
                model=f"dist-{tag}:p1", messages=[{"role": "user", "content": "Who wrote Dune?"}]
            )
            second = client.chat.completions.create(
                model=f"dist-{tag}:p1",
                messages=[
                    {"role": "user", "content": "Who wrote Dune?"},
                    {"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "When?"},
                ],
            )
        finally:
            stop_process(server.process)
    finally:
        deployment.close()
    assert (
        second.model_extra["peerblend"]["conversation_id"]
        == first.model_extra["peerblend"]["conversation_id"]
    )
    assert second.choices[0].message.content == "model0: When?"


# --- the protocol mapping, without a server -----------------------------------------------------


def test_messages_become_system_history_and_question():
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Who wrote Dune?"),
        ChatMessage(role="assistant", content="Frank Herbert"),
        ChatMessage(role="user", content=[{"type": "text", "text": "When?"}]),
    ]

    system, exchanges, question = conversation_of(messages)

    assert system == "Be brief." and question == "When?"
    assert [(e.question, e.answer) for e in exchanges] == [("Who wrote Dune?", "Frank Herbert")]


@pytest.mark.parametrize(
    "roles",
    [["user", "user"], ["assistant", "user"], ["user", "assistant"], ["user", "tool", "user"]],
)
def test_messages_that_do_not_alternate_are_refused(roles):
    with pytest.raises(ChatError) as raised:
        conversation_of([ChatMessage(role=r, content="x") for r in roles])
    assert raised.value.status == 400


def test_model_ids_map_to_methods_and_policies():
    committee = scripted_committee(3, name="c")
    assert parse_model("c", committee) == ("peer", "full")
    assert parse_model("c:p3", committee) == ("peer", "p3")
    assert parse_model("c:learned-route", committee) == ("peer", "learned-route")
    assert parse_model("c:pairwise", committee) == ("pairwise", "full")
    assert parse_model("c:single:m2", committee) == ("single:m2", "full")
    assert len(model_ids(committee)) == 1 + 4 + 1 + 3  # the committee, its policies, pairwise, singles
    with pytest.raises(ChatError) as raised:
        parse_model("c:single:m9", committee)
    assert raised.value.status == 404


@pytest.mark.services
def test_a_queue_without_a_worker_is_refused_at_once_naming_it(postgres_url, tmp_path):
    from pipeline.errors import ServiceUnavailable
    from tests.faults_support import Deployment
    from workers.consumers import QueueCheck

    tag = uuid.uuid4().hex[:8]
    committee = _likelihood_committee(f"queues-{tag}")
    members = tuple(m.model_copy(update={"queue": f"q{tag}.{m.name}"}) for m in committee.members)
    committee = committee.model_copy(update={"members": members})
    redis_url = os.environ.get("PEERBLEND_TEST_REDIS", "redis://127.0.0.1:6379")
    home = tmp_path / "home"
    home.mkdir()
    deployment = Deployment(
        home, committee, tag=tag, broker=f"{redis_url}/0", backend=f"{redis_url}/1", database=postgres_url
    )
    try:
        check = QueueCheck(deployment.app, committee, cache_s=0.0).check
        # Given no worker: refused, naming the member's queue
        with pytest.raises(ServiceUnavailable, match=rf"q{tag}\.m0 \(m0\)"):
            check(["m0", "m1"], deployment.settings.default_queue)
        # When a worker consumes every queue: accepted
        deployment.start_worker()
        check(["m0", "m1", "m2"], deployment.settings.default_queue)
    finally:
        deployment.close()


def test_a_timed_out_turn_is_not_retried_by_the_sdk(tmp_path: Path) -> None:
    # Given: a server whose turns time out after 1 s, members that take 3 s, and the openai SDK
    # with its default two retries
    committee = _likelihood_committee("slow")
    members = tuple(
        m.model_copy(update={"options": {**m.options, "delay_s": 3.0}}) for m in committee.members
    )
    (tmp_path / "committee.json").write_text(
        committee.model_copy(update={"members": members}).model_dump_json()
    )
    env = embedded_env(tmp_path, tmp_path / "committee.json", PEERBLEND_TURN_TIMEOUT_S="1")
    server = Server(env, tmp_path)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=2, timeout=60)

        # When one question times out
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "Who?"}])

        # Then: 504, and the SDK did not ask again (one turn, not three committee runs)
        assert raised.value.status_code == 504
        assert raised.value.response.headers["x-should-retry"] == "false"
        engine = create_engine(f"sqlite:///{tmp_path / 'peerblend.db'}")
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from turn")).scalar() == 1
        engine.dispose()
    finally:
        stop_process(server.process)
