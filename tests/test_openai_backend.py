"""OpenAIBackend against a real HTTP server on 127.0.0.1, scripted per test.

The server answers from a queue of ``Reply``s (then from ``default``) and records
every request, so a test can check what was sent and how often. ``GET /v1/models``
lists ``models``; ``/tokenize`` (vLLM's, at the root) answers 404 unless the test
gives the server a ``tokenizer``. A real vLLM server is in tests/test_vllm.py.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.backend import Capability, Message, Prompt, ScoreRequest, ran_out, render_transcript
from pipeline.ballot import ParsedRanking, ParseStatus, parse_ranking
from pipeline.ballot_grammar import BallotPath, complete_ballots
from pipeline.committee import Committee, Member
from pipeline.errors import BackendError, ConfigError
from pipeline.records import CandidateRecord, TurnContext
from pipeline.service.settings import Settings
from pipeline.stages import review
from workers.backends.base import BackendSpec, create_backend
from workers.backends.openai import OpenAIBackend
from workers.runtime import Runtime, committee_from_settings

QUESTION = Prompt(messages=(Message("user", "What is the capital of France?"),), max_new_tokens=8)


def chat(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | str | Callable[[dict[str, Any]], dict[str, Any]] = field(
        default_factory=lambda: chat("Paris")
    )
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.perf_counter)


class FakeServer:
    """Scripted replies, recorded requests, and the most requests ever in flight at once."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.default = Reply()
        self.models = ["served-model"]
        self.tokenizer: Callable[[dict[str, Any]], list[int]] | None = None
        self.requests: list[Request] = []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def posted(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def _next(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if request.path == "/v1/models":
                return Reply(
                    body={"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
                )
            if request.path == "/tokenize":  # vLLM's, beside /v1; unscripted
                if self.tokenizer is None:
                    return Reply(404, {"detail": "Not Found"})
                return Reply(body={"tokens": self.tokenizer(request.body)})
            return self.replies.pop(0) if self.replies else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(json.loads(raw) if raw else {})

            def do_GET(self) -> None:
                self._answer({})

            def _answer(self, sent: dict[str, Any]) -> None:
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, sent)
                reply = server._next(request)
                try:
                    time.sleep(reply.delay)
                    body = reply.body(request.body) if callable(reply.body) else reply.body
                    data = (body if isinstance(body, str) else json.dumps(body)).encode()
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.active -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def backend(server: FakeServer, model: str = "served-model", **options: Any) -> OpenAIBackend:
    quick = {"base_url": server.url, "timeout_s": 5.0}
    return OpenAIBackend(BackendSpec(model=model, options=quick | options))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- generate ---------------------------------------------------------------


@pytest.mark.parametrize(("finish", "ran"), [("length", True), ("stop", False), (None, False)])
def test_a_reply_cut_at_max_tokens_says_so(server: FakeServer, finish: str | None, ran: bool) -> None:
    # Given a server that says why it stopped ("length": cut at max_tokens), or says nothing
    body = chat("The capital of France")
    if finish is not None:
        body["choices"][0]["finish_reason"] = finish
    server.script(Reply(body=body))

    [answer] = backend(server).generate([QUESTION])

    assert answer == "The capital of France" and ran_out(answer) is ran


def test_generate_sends_the_chat_request_and_returns_the_content(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    server.script(Reply(body=chat("  Paris\n")))
    prompt = Prompt(
        messages=(Message("system", "Be brief."), Message("user", "Capital of France?")),
        max_new_tokens=12,
        stop=("\n", "###", "Q:", "User:", "A:"),
    )

    [answer] = backend(server, api_key_env="TEST_OPENAI_KEY", temperature=0.3).generate([prompt])

    assert answer == "Paris"
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {
        "model": "served-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "max_tokens": 12,
        "temperature": 0.3,
        "stop": ["\n", "###", "Q:", "User:"],  # servers take at most four
    }


def test_a_sampled_prompt_sends_its_own_temperature_and_seed(server: FakeServer) -> None:
    sampled = Prompt(messages=QUESTION.messages, temperature=0.7, seed=11)

    backend(server, temperature=0.0).generate([sampled, QUESTION])

    bodies = sorted((r.body for r in server.requests), key=lambda b: b["temperature"])
    assert bodies[0]["temperature"] == 0.0 and "seed" not in bodies[0]  # greedy: the member's setting
    assert (bodies[1]["temperature"], bodies[1]["seed"]) == (0.7, 11)


def test_no_api_key_env_sends_no_authorization_and_extra_body_is_merged(server: FakeServer) -> None:
    [_] = backend(server, extra_body={"top_p": 0.5, "seed": 7}).generate([QUESTION])

    [request] = server.requests
    assert "authorization" not in request.headers
    assert "stop" not in request.body
    assert request.body["top_p"] == 0.5 and request.body["seed"] == 7


def test_prefill_is_sent_as_a_final_assistant_message_and_stripped_when_repeated(server: FakeServer) -> None:
    # Given a server that answers afresh, repeating the prefill, and one that continues it
    server.script(Reply(body=chat("Ranking: B > A")), Reply(body=chat(" B > A")))
    prompt = Prompt(messages=(Message("user", "Rank [A] and [B]."),), prefill="Ranking:", stop=("\n",))
    member = backend(server)

    # When both are asked
    repeated = member.generate([prompt])
    continued = member.generate([prompt])

    # Then the answer is the text after the prefill either way
    assert repeated == continued == ["B > A"]
    messages = server.requests[0].body["messages"]
    assert messages[-1] == {"role": "assistant", "content": "Ranking:"}
    assert "continue_final_message" not in server.requests[0].body


def test_continue_final_message_asks_vllm_to_continue_only_prompts_with_a_prefill(server: FakeServer) -> None:
    prefilled = Prompt(messages=QUESTION.messages, prefill="The answer is")
    member = backend(server, continue_final_message=True)

    member.generate([prefilled])
    member.generate([QUESTION])

    with_prefill, without = (r.body for r in server.requests)
    assert with_prefill["continue_final_message"] is True
    assert with_prefill["add_generation_prompt"] is False
    assert "continue_final_message" not in without


def test_stops_beyond_the_fourth_are_applied_to_the_reply(server: FakeServer) -> None:
    server.script(Reply(body=chat("\nParis|France")))
    prompt = Prompt(messages=QUESTION.messages, stop=("1", "2", "3", "4", "|"))

    assert backend(server).generate([prompt]) == ["Paris"]


def test_a_batch_runs_concurrently_and_keeps_prompt_order(server: FakeServer) -> None:
    server.default = Reply(body=lambda body: chat(body["messages"][-1]["content"].upper()), delay=0.1)
    prompts = [Prompt(messages=(Message("user", f"q{i}"),)) for i in range(4)]

    answers = backend(server, max_concurrency=4).generate(prompts)

    assert answers == ["Q0", "Q1", "Q2", "Q3"]
    assert server.max_active > 1


# --- retries and failures -----------------------------------------------------


def gaps(server: FakeServer) -> list[float]:
    """Seconds between consecutive requests."""
    return [b.at - a.at for a, b in zip(server.requests, server.requests[1:], strict=False)]


@pytest.mark.parametrize(
    "retry_after",
    [
        lambda: "2",  # seconds
        lambda: email.utils.formatdate(time.time() + 3, usegmt=True),  # an HTTP date, 2-3 s ahead
    ],
    ids=["seconds", "http-date"],
)
def test_429_waits_as_long_as_retry_after_says_in_either_form(
    server: FakeServer, retry_after: Callable[[], str]
) -> None:
    server.script(
        Reply(429, {"error": "slow down"}, {"Retry-After": retry_after()}), Reply(body=chat("Paris"))
    )

    assert backend(server).generate([QUESTION]) == ["Paris"]

    assert len(server.requests) == 2
    assert gaps(server)[0] >= 1.5  # the server's wait, not the SDK's own backoff (at most 0.5 s here)


def test_503_twice_then_success_with_growing_jittered_backoff(server: FakeServer) -> None:
    server.script(Reply(503, "busy"), Reply(503, "busy"), Reply(body=chat("Paris")))

    assert backend(server).generate([QUESTION]) == ["Paris"]

    assert len(server.requests) == 3
    first, second = gaps(server)
    # 0.5 s then 1 s, each shortened by a random 0-25 % (jitter, so retries do not march in step)
    assert 0.37 <= first < second and second >= 0.74


def test_500_always_fails_after_all_attempts(server: FakeServer) -> None:
    server.default = Reply(500, {"error": "boom"})

    with pytest.raises(BackendError) as error:
        backend(server, max_retries=2).generate([QUESTION])

    assert len(server.requests) == 3
    message = str(error.value)
    assert f"{server.url}/chat/completions" in message
    assert "HTTP 500" in message and "served-model" in message


def test_400_fails_at_once_with_the_server_text(server: FakeServer) -> None:
    server.script(Reply(400, {"error": {"message": "max_tokens too large"}}))

    with pytest.raises(BackendError, match="max_tokens too large"):
        backend(server).generate([QUESTION])

    assert len(server.requests) == 1


def test_a_slow_server_times_out(server: FakeServer) -> None:
    server.default = Reply(delay=3.0)
    started = time.perf_counter()

    with pytest.raises(BackendError, match="Timeout"):
        backend(server, timeout_s=0.2, max_retries=1).generate([QUESTION])

    assert len(server.requests) == 2
    assert time.perf_counter() - started < 1.5  # two 0.2 s attempts and one backoff (<= 0.5 s)


def test_the_members_time_limit_bounds_each_request_when_the_option_is_unset(server: FakeServer) -> None:
    # Given no timeout_s option, and a member whose calls may take 0.3 s (the runtime passes it)
    server.default = Reply(delay=3.0)
    member = OpenAIBackend(
        BackendSpec(model="served-model", options={"base_url": server.url, "max_retries": 0}, timeout_s=0.3)
    )
    started = time.perf_counter()

    with pytest.raises(BackendError, match="Timeout"):
        member.generate([QUESTION])

    assert member.timeout_s == 0.3
    assert time.perf_counter() - started < 1.5


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    member = OpenAIBackend(BackendSpec(model="m", options={"base_url": url, "max_retries": 1}))

    with pytest.raises(BackendError, match="ConnectError"):
        member.generate([QUESTION])


def test_a_refused_connection_stops_the_warm_up() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    member = OpenAIBackend(BackendSpec(model="m", options={"base_url": url, "max_retries": 0}))

    with pytest.raises(BackendError, match="ConnectError"):
        member.warm_up()


def test_max_concurrency_bounds_simultaneous_requests_across_threads(server: FakeServer) -> None:
    # Given a server that takes 0.2 s per request and a member limited to two at once
    server.default = Reply(delay=0.2)
    member = backend(server, max_concurrency=2)
    answers: list[list[str]] = []

    # When six threads ask at the same time
    threads = [threading.Thread(target=lambda: answers.append(member.generate([QUESTION]))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then all are answered, never more than two in flight
    assert answers == [["Paris"]] * 6
    assert server.max_active == 2


# --- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "base_url"),
        ({"base_url": "http://x/v1", "retries": 2}, "retries"),
        ({"base_url": "http://x/v1", "timeout_s": 0}, "timeout_s"),
        ({"base_url": "http://x/v1", "max_concurrency": "many"}, "max_concurrency"),
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "http://x/v1", "api_key_env": "PEERBLEND_TEST_UNSET_KEY"}, "PEERBLEND_TEST_UNSET_KEY"),
    ],
)
def test_bad_options_raise_config_error_naming_the_field(
    options: dict[str, object], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEERBLEND_TEST_UNSET_KEY", raising=False)

    with pytest.raises(ConfigError, match=named):
        OpenAIBackend(BackendSpec(model="m", options=options))


def test_construction_does_not_contact_the_server(server: FakeServer) -> None:
    backend(server)

    assert server.requests == []


def test_create_backend_and_member_validation(server: FakeServer) -> None:
    member = Member(name="remote", backend="openai", model="served-model", options={"base_url": server.url})

    built = create_backend(member.backend, BackendSpec(model=member.model, options=member.options))

    assert isinstance(built, OpenAIBackend)
    assert built.generate([QUESTION]) == ["Paris"]


def test_a_committee_file_member_is_built_by_the_worker_runtime(server: FakeServer, tmp_path: Path) -> None:
    # Given the TOML a user writes, loaded as a worker loads it (from PEERBLEND_COMMITTEE_FILE)
    path = tmp_path / "committee.toml"
    path.write_text(
        f"""
name = "remote"
[[members]]
name = "vllm-qwen"
backend = "openai"
model = "Qwen/Qwen2.5-7B-Instruct"
review_method = "ranking"
options = {{ base_url = "{server.url}", max_concurrency = 8, extra_body = {{ top_p = 1.0 }} }}
[[members]]
name = "scripted"
backend = "scripted"
model = "s"
"""
    )
    settings = Settings(home=tmp_path, committee_file=path)
    committee = committee_from_settings(settings)

    built = Runtime(settings, committee).backend(committee.member("vllm-qwen"))

    assert built.generate([QUESTION]) == ["Paris"]


# --- score: the text form (servers without vLLM's /tokenize) ----------------------------


def echo_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """Two context tokens, then " Par" and "is", split where a tokenizer would; then one generated token."""
    [text] = body["prompt"]
    cut = text.rindex(" Par")
    tokens = [text[:5], text[5:cut], " Par", "is", "!"]
    offsets = [0, 5, cut, cut + 4, len(text)]
    logprobs = {"tokens": tokens, "token_logprobs": [None, -3.0, -0.5, -1.5, -9.0], "text_offset": offsets}
    return {"choices": [{"index": 0, "text": text + "!", "logprobs": logprobs}]}


def test_score_is_the_mean_logprob_of_the_continuation_tokens(server: FakeServer) -> None:
    server.default = Reply(body=echo_logprobs)
    request = ScoreRequest(QUESTION, "Paris")

    [score] = backend(server).score([request])

    assert score == pytest.approx(
        -1.0
    )  # (-0.5 + -1.5) / 2; the context's -3.0 and the generated -9.0 left out
    [sent] = server.posted("/v1/completions")
    assert sent.body["prompt"] == [render_transcript(QUESTION) + " Paris"]
    assert sent.body["echo"] is True and sent.body["logprobs"] == 1
    assert sent.body["max_tokens"] == 1  # some vLLM versions refuse 0


def test_an_empty_continuation_scores_low_without_a_request(server: FakeServer) -> None:
    assert backend(server).score([ScoreRequest(QUESTION, "")]) == [-100.0]
    assert server.requests == []


@pytest.mark.parametrize(
    "reply", [Reply(404, "Not Found"), Reply(body={"choices": [{"index": 0, "text": "x"}]})]
)
def test_a_server_that_cannot_score_says_to_use_ranking_and_is_not_asked_again(
    server: FakeServer, reply: Reply
) -> None:
    server.script(reply)
    member = backend(server)

    for _ in range(2):
        with pytest.raises(BackendError, match='review_method = "ranking"'):
            member.score([ScoreRequest(QUESTION, "Paris")])

    assert len(server.posted("/v1/completions")) == 1  # not retried, and the second call fails at once


# --- score: token ids rendered by vLLM's /tokenize (chat template) -------------------------


def toy_tokenize(body: dict[str, Any]) -> list[int]:
    """One id per character; chat messages rendered as ``<role>content``, a generation prompt as ``<assistant>``."""
    if "prompt" in body:
        return [ord(c) for c in body["prompt"]]
    text = "".join(f"<{m['role']}>{m['content']}" for m in body["messages"])
    if body.get("add_generation_prompt", True):
        text += "<assistant>"
    return [ord(c) for c in text]


def toy_logprob(token: int) -> float:
    return -(token % 7) / 4


def echo_token_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """Each prompt of the list echoed: its tokens' log-probs (the first None), then one generated token."""
    choices = [
        {"index": i, "text": "", "logprobs": {"token_logprobs": [None, *map(toy_logprob, ids[1:]), -9.0]}}
        for i, ids in enumerate(body["prompt"])
    ]
    return {"choices": choices[::-1]}  # any order: the index says which prompt


def test_with_tokenize_a_review_is_one_request_of_token_ids_rendered_with_the_chat_template(
    server: FakeServer,
) -> None:
    # Given a vLLM-like server (it has /tokenize) and one review: two candidates under two prompts
    server.tokenizer = toy_tokenize
    server.default = Reply(body=echo_token_logprobs)
    content_free = Prompt(messages=(Message("user", "N/A"),))
    requests = [ScoreRequest(p, c) for c in ("Paris", "Lyon") for p in (QUESTION, content_free)]

    # When it is scored
    scores = backend(server).score(requests)

    # Then each score is the mean over the continuation's own tokens, after its context's
    expected = [
        sum(map(toy_logprob, toy_tokenize({"prompt": r.continuation}))) / len(r.continuation)
        for r in requests
    ]
    assert scores == pytest.approx(expected)
    # and the server saw one /completions request with every (context + continuation) as token ids
    [sent] = server.posted("/v1/completions")
    question = toy_tokenize({"messages": [{"role": "user", "content": QUESTION.messages[0].content}]})
    assert sent.body["prompt"][0] == question + [ord(c) for c in "Paris"]
    assert len(sent.body["prompt"]) == 4 and sent.body["max_tokens"] == 1
    # contexts and continuations tokenized apart, each once
    tokenized = server.posted("/tokenize")
    assert sum("messages" in r.body for r in tokenized) == 1 + 2  # the form probe, then the two prompts
    assert sorted(r.body["prompt"] for r in tokenized if "prompt" in r.body) == ["Lyon", "Paris"]
    assert all(r.body["add_special_tokens"] is False for r in tokenized if "prompt" in r.body)


def test_with_tokenize_a_prefill_is_continued_by_the_chat_template(server: FakeServer) -> None:
    server.tokenizer = toy_tokenize
    server.default = Reply(body=echo_token_logprobs)
    judged = Prompt(messages=QUESTION.messages, prefill="Better answer:")

    backend(server).score([ScoreRequest(judged, " A")])

    rendered = [r.body for r in server.posted("/tokenize") if r.body.get("continue_final_message")]
    assert rendered == [
        {
            "model": "served-model",
            "messages": [
                {"role": "user", "content": QUESTION.messages[0].content},
                {"role": "assistant", "content": "Better answer:"},
            ],
            "add_generation_prompt": False,
            "continue_final_message": True,
        }
    ]


# --- warm-up: at worker start -------------------------------------------------------------


def test_options_switch_warm_up_on_and_the_worker_warms_up_the_member(server: FakeServer) -> None:
    member = Member(name="remote", backend="openai", model="served-model", options={"base_url": server.url})

    assert Capability.WARM_UP in member.capabilities


def test_warm_up_names_the_served_models_when_the_member_names_another(server: FakeServer) -> None:
    server.models = ["qwen", "smol"]

    with pytest.raises(BackendError, match="serves qwen, smol, not 'served-model'"):
        backend(server).warm_up()


def test_warm_up_of_a_server_that_can_score_remembers_how(server: FakeServer) -> None:
    server.tokenizer = toy_tokenize
    server.default = Reply(body=echo_token_logprobs)
    member = backend(server)

    member.warm_up()
    member.warm_up()  # a second member on the same backend: nothing more is sent
    member.score([ScoreRequest(QUESTION, "Paris")])

    assert len(server.posted("/v1/models")) == 1
    assert [r.path for r in server.requests].count("/tokenize") == 1 + 2 + 2  # the form once; two per score
    assert len(server.posted("/v1/completions")) == 2


def test_warm_up_of_a_server_that_cannot_score_keeps_the_worker_and_fails_scoring_at_once(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server like llama.cpp's: chat works, /completions echoes no prompt log-probs
    server.default = Reply(body={"choices": [{"index": 0, "text": "Hello", "logprobs": None}]})
    member = backend(server)

    # When the worker warms it up, Then it starts (its members may review by ranking) and says why
    member.warm_up()
    assert 'review_method = "ranking"' in caplog.text and "'served-model'" in caplog.text
    assert member.scoring_problem is not None and "no prompt logprobs" in member.scoring_problem

    # and a likelihood review fails at once, without a request
    sent = len(server.requests)
    with pytest.raises(BackendError, match="cannot score"):
        member.score([ScoreRequest(QUESTION, "Paris")])
    assert len(server.requests) == sent


# --- ballots: structured outputs where the server has them ---------------------------------


def structured(form: str, pick: Callable[[list[str]], str] = lambda choices: choices[-1]) -> Any:
    """A server that honours structured outputs in ``form`` only (a model that picks ``pick`` of
    the choices) and, like vLLM, ignores request fields it does not know."""

    def body(sent: dict[str, Any]) -> dict[str, Any]:
        if form == "structured_outputs":
            choices = (sent.get("structured_outputs") or {}).get("choice")
        elif form == "guided_choice":
            choices = sent.get("guided_choice")
        else:
            schema = (sent.get("response_format") or {}).get("json_schema", {}).get("schema", {})
            choices = schema.get("properties", {}).get("ranking", {}).get("enum")
        if not choices:
            return chat("Hello! How can I help?")
        reply = pick(choices)
        return chat(json.dumps({"ranking": reply}) if form == "json_schema" else reply)

    return body


def ballot_prompt(labels: str) -> Prompt:
    return Prompt(
        (Message("user", "Rank [A] [B] [C]."),),
        prefill="Ranking:",
        max_new_tokens=4,
        stop=("\n",),
        ballot=tuple(labels),
    )


def sent_choices(request: Request) -> list[str] | None:
    body = request.body
    if "structured_outputs" in body:
        return list(body["structured_outputs"]["choice"])
    if "guided_choice" in body:
        return list(body["guided_choice"])
    if "response_format" in body:
        return list(body["response_format"]["json_schema"]["schema"]["properties"]["ranking"]["enum"])
    return None


@pytest.mark.parametrize("form", ["structured_outputs", "guided_choice", "json_schema"])
def test_warm_up_finds_the_servers_structured_outputs_and_a_ballot_is_one_of_every_order(
    server: FakeServer, form: str
) -> None:
    # Given a server that honours one form of structured outputs (vLLM 0.12+, older vLLM, OpenAI's API)
    server.default = Reply(body=structured(form, pick=lambda c: "C > A > B" if "C > A > B" in c else c[0]))
    member = backend(server)

    # When the worker warms it up
    member.warm_up()

    # Then the form is found, probed with one allowed reply, and ballots go that way
    assert member.ballot_form == form
    probes = server.posted("/v1/chat/completions")
    assert sent_choices(probes[-1]) == ["Q > Z"]
    assert member.ballot_path(("A", "B", "C")) is BallotPath.STRUCTURED
    (reply,) = member.generate([ballot_prompt("ABC")])
    sent = server.posted("/v1/chat/completions")[-1]
    assert sorted(sent_choices(sent) or []) == sorted(complete_ballots("ABC"))
    assert sent.body["max_tokens"] >= 12
    assert reply == "C > A > B"
    assert parse_ranking(reply, "ABC") == ParsedRanking(("C", "A", "B"), ParseStatus.OK)


def test_a_ranking_review_on_a_structured_server_records_the_path(server: FakeServer) -> None:
    # Given a reviewer on a vLLM server with structured outputs, as a worker builds and warms it
    server.default = Reply(body=structured("structured_outputs"))
    member = Member(
        name="remote",
        backend="openai",
        model="served-model",
        review_method="ranking",
        options={"base_url": server.url, "timeout_s": 5.0},
    )
    remote = OpenAIBackend(BackendSpec(model=member.model, options=member.options))
    remote.warm_up()
    committee = Committee(name="c", members=(member, member.model_copy(update={"name": "other"})))
    candidates = [CandidateRecord(m, text=f"answer {m}") for m in ("x", "y", "z")]

    # When it reviews a turn
    record = review(remote, member, committee, TurnContext("conv", 0, "Who?"), candidates)

    # Then the ballot is the server's choice (the last of the orders sent: the reverse of the shown
    # order), counted, with its path recorded
    assert record.status == "structured"
    assert record.ranking == tuple(reversed(record.shown_order))
    assert record.raw == "structured: C > B > A"


def test_a_server_without_structured_outputs_is_sent_free_text_ballots(server: FakeServer) -> None:
    # Given a server that ignores every structured-output field (it answers as it likes)
    server.default = Reply(body=chat("B > A"))
    member = backend(server)

    member.warm_up()

    # Then each form was probed once and none is used: the ballot prompt goes as plain text
    assert member.ballot_form is None
    assert [sent_choices(r) for r in server.posted("/v1/chat/completions")] == [["Q > Z"]] * 3
    assert member.ballot_path(("A", "B")) is BallotPath.PARSED
    assert member.generate([ballot_prompt("AB")]) == ["B > A"]
    assert sent_choices(server.posted("/v1/chat/completions")[-1]) is None


def test_a_server_that_refuses_the_probe_is_sent_free_text_ballots(server: FakeServer) -> None:
    server.default = Reply(400, {"error": {"message": "unknown field"}})
    member = backend(server)

    member.warm_up()

    assert member.ballot_form is None


def test_a_server_that_later_refuses_the_form_is_sent_free_text_from_then_on(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server found to take guided_choice at warm-up
    server.default = Reply(body=structured("guided_choice"))
    member = backend(server)
    member.warm_up()
    assert member.ballot_form == "guided_choice"

    # When it refuses a ballot's choices (HTTP 400), then answers in free text
    server.script(
        Reply(400, {"error": {"message": "guided_choice is not supported"}}), Reply(body=chat("A > C"))
    )
    (reply,) = member.generate([ballot_prompt("ABC")])

    # Then the ballot is asked again as free text, and so is every later one
    assert reply == "A > C"
    assert sent_choices(server.posted("/v1/chat/completions")[-1]) is None
    assert member.ballot_path(("A", "B", "C")) is BallotPath.PARSED
    assert "free text from now on" in caplog.text


def test_more_labels_than_a_list_of_choices_can_hold_are_free_text(server: FakeServer) -> None:
    server.default = Reply(body=structured("structured_outputs"))
    member = backend(server)
    member.warm_up()
    server.default = Reply(body=chat("G > A"))

    assert member.ballot_path(tuple("ABCDEFG")) is BallotPath.PARSED
    assert member.generate([ballot_prompt("ABCDEFG")]) == ["G > A"]
    assert sent_choices(server.posted("/v1/chat/completions")[-1]) is None
