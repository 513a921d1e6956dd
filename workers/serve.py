"""``peerblend serve``: an OpenAI-compatible chat endpoint whose model is a blend.

    POST /v1/chat/completions   the request's messages are the conversation
    GET  /v1/models             one model per committee, plus its method/policy variants
    GET  /health

Model ids: ``<committee>`` (peer review, full ranking), ``<committee>:p1`` / ``:p2`` /
``:p3`` (peer review under a shortlist policy), ``<committee>:pairwise`` (the
LLM-Blender baseline), ``<committee>:single:<member>`` (one member alone).

A request's system messages go to the generators; its earlier user/assistant
messages are the conversation so far; its last message (a user's) is the question.
When the earlier messages equal a stored live conversation's exchanges (same
committee and variant), the request continues that conversation, so its policy
carries over; ``conversation_id`` in the body (the SDK's ``extra_body``) or the
``X-Peerblend-Conversation`` header names one explicitly. The response is a standard
chat completion plus a ``peerblend`` object: conversation id, turn, chosen member,
ranking, scores, every candidate and the timings. Errors come in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from pipeline.context import estimate_tokens
from pipeline.errors import InputError
from pipeline.plan import RunConfig, check_run
from pipeline.service.client import BlendClient, TurnOutcome
from pipeline.service.live import off_loop
from workers.auth import KeyCheck, Refused
from workers.chat import (
    ChatError,
    check_text,
    conversation_id_of,
    conversation_of,
    error_body,
    model_ids,
    parse_model,
    parse_request,
    request_key_of,
)
from workers.chat_ask import Ask, send_turn, wait_turn
from workers.server_options import ServerOptions
from workers.web import web_router

KEEP_ALIVE_S = 5.0
EVENT_POLL_S = 0.5  # how often a stream looks for the turn's new candidates and ballots
access = logging.getLogger("peerblend.access")


def create_api(client: BlendClient, options: ServerOptions) -> FastAPI:
    api = FastAPI(title="peerblend", docs_url=None, redoc_url=None)
    _answer_errors(api)
    if options.access_log:
        _log_requests(api)
    # The API takes its key from Authorization: Bearer only, as OpenAI clients send it.
    unauthorized = ChatError(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")
    keyed = [
        Depends(KeyCheck(options.api_keys).require(lambda _: _error_response(unauthorized), bearer_only=True))
    ]
    _model_routes(api, client, keyed)
    _chat_routes(api, client, options, keyed)
    api.include_router(web_router(client, options))  # the read-only pages (workers/web.py)
    return api


def _answer_errors(api: FastAPI) -> None:
    """Every error in OpenAI's shape, never FastAPI's {"detail": ...} or a plain-text 500."""

    @api.exception_handler(ChatError)
    async def _chat_error(_: Request, error: ChatError) -> Response:
        return _error_response(error)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        """An unknown path (404), a wrong method (405), a missing static file: the status kept."""
        allowed = (error.headers or {}).get("Allow")
        message = f"{error.detail} ({request.method} {request.url.path})"
        message += f"; allowed: {allowed}" if allowed else ""
        headers = dict(error.headers) if error.headers else None
        return _error_response(ChatError(error.status_code, message, "invalid_request_error"), headers)

    @api.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> Response:
        return _error_response(ChatError(500, f"internal error: {type(error).__name__}", "server_error"))

    @api.exception_handler(Refused)
    async def _refused(_: Request, refused: Refused) -> Response:
        return refused.response  # a request without a key (workers.auth): the answer its route chose


def _log_requests(api: FastAPI) -> None:
    """One line a request on the peerblend.access logger (method, path, status, time, turn)."""

    @api.middleware("http")
    async def _log_access(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            turn = getattr(request.state, "turn", None)
            access.info(
                "%s %s %d %.1f ms%s",
                request.method,
                request.url.path,
                status,
                (time.perf_counter() - started) * 1000,
                f" conversation {turn[0]} turn {turn[1]}" if turn else "",
            )


def _model_routes(api: FastAPI, client: BlendClient, keyed: list[Any]) -> None:
    @api.get("/health")
    async def _health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models", dependencies=keyed)
    async def _models() -> dict[str, Any]:
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "peerblend"}
            for m in model_ids(client.committee)
        ]
        return {"object": "list", "data": data}

    @api.get("/v1/models/{model_id:path}", dependencies=keyed)
    async def _model(model_id: str) -> dict[str, Any]:
        if model_id not in model_ids(client.committee):
            raise ChatError(
                404,
                f"no model {model_id!r}; GET /v1/models lists them",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "peerblend"}


def _chat_routes(api: FastAPI, client: BlendClient, options: ServerOptions, keyed: list[Any]) -> None:
    @api.post("/v1/chat/completions", dependencies=keyed)
    async def _chat(
        request: Request,
        x_peerblend_conversation: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> Any:
        # The whole request is checked before anything is stored: a refused one leaves nothing.
        body = parse_request(await request.body())
        run = _run_of(client, body.model)
        system, exchanges, question = conversation_of(body.messages)
        check_text(client.limits, system, exchanges, question)
        explicit = conversation_id_of(body.conversation_id, x_peerblend_conversation)
        key = request_key_of(idempotency_key)
        bounds = (body.token_limit, body.stops)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.stream:  # one thread does it all: each hop to a thread and back costs latency

            def answer() -> dict[str, Any]:
                chat, turn_index = send_turn(
                    Ask(client, run, system, exchanges, question, explicit, key, bounds)
                )
                request.state.turn = (chat.conversation_id, turn_index)  # for the access log
                outcome = wait_turn(chat, turn_index, options.turn_timeout_s)
                return _completion(client, outcome, body.model, completion_id, question)

            return await off_loop(answer)
        # Streaming: the turn is sent before the response starts (its errors are HTTP errors).
        ask = Ask(client, run, system, exchanges, question, explicit, key, bounds)
        chat, turn_index = await off_loop(lambda: send_turn(ask))
        request.state.turn = (chat.conversation_id, turn_index)
        waiting = asyncio.ensure_future(off_loop(lambda: wait_turn(chat, turn_index, options.turn_timeout_s)))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(
            client,
            waiting,
            (chat.conversation_id, turn_index),
            _chunks(body.model, completion_id),
            include_usage,
        )
        return StreamingResponse(stream, media_type="text/event-stream")

    @api.get("/v1/conversations/{conversation_id}/turns/{turn_index}", dependencies=keyed)
    async def _turn(conversation_id: str, turn_index: int) -> Response:
        """A turn asked before (a 503 or 504 names it): 200 with its answer once stored, 202 while
        it runs, 404 if there is no such turn."""
        return await off_loop(lambda: _turn_response(client, conversation_id, turn_index))


def _run_of(client: BlendClient, model: str) -> RunConfig:
    method, policy = parse_model(model, client.committee)
    try:
        return check_run(client.committee, method=method, policy=policy, top_k=None)
    except InputError as error:
        raise ChatError(400, str(error), "invalid_request_error", param="model") from None


def _turn_response(client: BlendClient, conversation_id: str, turn_index: int) -> Response:
    try:
        state = client.store.progress(conversation_id, turn_index)
    except InputError as error:
        raise ChatError(404, str(error), "invalid_request_error", code="turn_not_found") from None
    body: dict[str, Any] = {
        "object": "peerblend.turn",
        "conversation_id": conversation_id,
        "turn_index": turn_index,
    }
    if isinstance(state, int):
        body |= {"status": "running", "attempt": state}
        content = json.dumps(body).encode()
        return Response(content, 202, {"retry-after": str(RETRY_AFTER_S)}, media_type="application/json")
    body |= {"status": state.status, "answer": state.answer, "peerblend": _extension(client, state)}
    return Response(json.dumps(body, ensure_ascii=False).encode(), 200, media_type="application/json")


def _completion(
    client: BlendClient, outcome: TurnOutcome, model: str, completion_id: str, question: str
) -> dict[str, Any]:
    extension = _extension(client, outcome)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.answer},
                "finish_reason": _finish(extension),
            }
        ],
        "usage": _usage(extension, outcome, question),
        "peerblend": extension,
    }


def _usage(extension: dict[str, Any], outcome: TurnOutcome, question: str = "") -> dict[str, int]:
    """Every model call of the turn (pipeline.usage), as the turn stored it; for a turn stored
    before turns counted their calls, the question and the answer alone."""
    counted = extension["decision"].get("usage")
    if counted:
        return {k: int(counted[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    read, written = estimate_tokens(question), estimate_tokens(outcome.answer)
    return {"prompt_tokens": read, "completion_tokens": written, "total_tokens": read + written}


def _finish(extension: dict[str, Any]) -> str:
    """OpenAI's finish_reason: "length" when the answer ran into max_tokens (every turn stored
    before the decision record said so counts as "stop")."""
    return str(extension["decision"].get("finish", "stop"))


def _extension(client: BlendClient, outcome: TurnOutcome) -> dict[str, Any]:
    """What the blend did: every candidate, the ranking and scores, the timings (one read of the
    stored turn, after it finished)."""
    candidates, decision = client.store.turn_details(outcome.conversation_id, outcome.turn_index)
    return {
        "conversation_id": outcome.conversation_id,
        "turn_index": outcome.turn_index,
        "status": outcome.status,
        "chosen": outcome.chosen,
        "ranking": outcome.ranking,
        "scores": outcome.scores,
        "candidates": candidates,
        "timings": outcome.timings,
        "decided_by": decision.get("decided_by"),
        "usage": decision.get("usage", {}).get("members", {}),
        "decision": decision,
    }


async def _stream(
    client: BlendClient,
    ask: asyncio.Future[TurnOutcome],
    turn: tuple[str, int],
    chunk: Callable[..., str],
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: the role at once; while the committee works, each candidate, ballot and
    judgement as it is stored (chunks with an empty delta and a ``peerblend`` event, which standard
    clients skip: no content) and keep-alives; then the answer, the decision, the usage if asked, [DONE]."""
    yield chunk({"role": "assistant", "content": ""})
    seen, quiet_since = 0, time.monotonic()
    while not ask.done():
        await asyncio.wait({ask}, timeout=EVENT_POLL_S)
        for event in await asyncio.to_thread(client.store.turn_events, *turn, after=seen):
            seen = event["id"]
            quiet_since = time.monotonic()
            yield chunk({}, peerblend=_event(event))
        if time.monotonic() - quiet_since > KEEP_ALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
    try:
        outcome = ask.result()
    except ChatError as error:
        yield f"data: {json.dumps(error_body(error))}\n\n"
        yield "data: [DONE]\n\n"
        return
    for event in await asyncio.to_thread(client.store.turn_events, *turn, after=seen):
        yield chunk({}, peerblend=_event(event))
    extension = await asyncio.to_thread(_extension, client, outcome)
    yield chunk({"content": outcome.answer})
    yield chunk({}, _finish(extension), peerblend=extension)
    if include_usage:
        yield chunk(None, usage=_usage(extension, outcome))
    yield "data: [DONE]\n\n"


def _chunks(model: str, completion_id: str) -> Callable[..., str]:
    """``chunk(delta, finish=None, **extra)``: one ``chat.completion.chunk`` event; ``delta`` None
    makes a chunk with no choices (the usage, as OpenAI sends it when asked)."""

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    return chunk


# What a progress event shows of its record: enough to draw it, not the prompts or raw text.
EVENT_FIELDS = {
    "candidate": ("text", "error", "seconds"),
    "ballot": ("method", "status", "ranking", "error", "voters", "seconds"),
    "judgement": ("first", "second", "p_first", "error", "seconds"),
}


def _event(event: dict[str, Any]) -> dict[str, Any]:
    record = event["record"]
    shown = {k: record.get(k) for k in EVENT_FIELDS.get(event["kind"], ())}
    return {"event": event["kind"], "member": event["member"], **shown}


# Errors a client must not retry by itself: a timed-out turn still runs (a retry would ask the
# committee again), and a turn in progress stays so. OpenAI's SDKs obey ``x-should-retry``.
NOT_RETRIED = ("turn_timeout", "turn_in_progress", "idempotency_key_reused")
RETRY_AFTER_S = 2


def _error_response(error: ChatError, headers: dict[str, str] | None = None) -> Response:
    """``{"error": {"message", "type", "param", "code"}}`` (ASCII JSON: a message quoting the
    request's text stays renderable even when that text holds a lone surrogate)."""
    content = json.dumps(error_body(error)).encode()
    if error.code in NOT_RETRIED:
        headers = {**(headers or {}), "x-should-retry": "false"}
    elif error.status == 503 and error.turn is not None:
        # The turn is stored and may still finish: a retry in a moment attaches to it.
        headers = {**(headers or {}), "retry-after": str(RETRY_AFTER_S)}
    return Response(content, status_code=error.status, headers=headers, media_type="application/json")
