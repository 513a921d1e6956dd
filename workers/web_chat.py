"""Chatting on the pages: start a live conversation, ask, keep asking (the forms' POST routes).

    POST /chat                              start a conversation with its first question
    POST /conversations/{id}/turns          ask the next question of a live conversation

The same live conversations as the API (``BlendClient.start``, ``LiveConversation.send``):
a question is stored and sent, never waited for here; the conversation page then follows the
turn through its events (``workers.web_stream``). A form posts as usual and is redirected
(303) to the conversation; the page's script posts with ``Accept: application/json`` and gets
``{"conversation", "turn", "number", "events", "fragment"}`` instead. A refused question
(``InputError``, ``TurnInProgress``) comes back on the page with the text still in the box.

Forgery: with API keys the pages keep the key in a ``SameSite=Strict`` cookie, which a
browser does not send with another site's POST; without keys there is no cookie at all, so
every POST also needs the form's token (an HMAC of the key it was rendered for, under a
secret drawn when the server starts) and, when the browser names one, the same ``Origin``
as the page: another site can neither read the token nor post as this origin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.errors import BlendError, InputError, ServiceUnavailable, TurnInProgress
from pipeline.service.client import BlendClient
from pipeline.service.live import checked_question
from workers.chat import ChatError, model_ids, parse_model
from workers.web_pages import wants_json

if TYPE_CHECKING:
    from workers.web_pages import Pages

FIELDS = ("question", "model", "system", "passage", "csrf")
MAX_FORM_BYTES = 4_000_000  # above any passage the limits admit; refused before it is read
# Renders the page a refused form was on again: (request, where, context, status); ``where`` is
# "chat" (the list page's start form) or the conversation's id.
Retry = Callable[[Request, str, dict[str, Any], int], Response]


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields, blank where absent. Forms and the page's script post urlencoded; it is
    parsed here, so the app needs no multipart parser."""
    size = request.headers.get("content-length", "0")
    if not size.isdigit() or int(size) > MAX_FORM_BYTES:
        raise InputError(f"a form may carry at most {MAX_FORM_BYTES} bytes")
    body = (await request.body())[:MAX_FORM_BYTES]
    fields = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return {name: fields.get(name, "") for name in FIELDS}


def chat_routes(router: APIRouter, client: BlendClient, pages: Pages, retry: Retry) -> None:
    """``POST /chat`` and ``POST /conversations/{id}/turns`` (see the module docstring)."""

    def start(request: Request, form: dict[str, str]) -> Response:
        if (forged := pages.forged(request, form["csrf"])) is not None:
            return forged
        try:
            method, policy = _variant(client, form["model"])
            question = checked_question(client.limits, form["question"])  # before anything is stored
            chat = client.start(  # refused before anything is stored if a queue has no worker
                passage=form["passage"].strip() or None,
                system=form["system"].strip() or None,
                method=method,
                policy=policy,
            )
            index = chat.send(question)
        except BlendError as error:
            return _refusal(request, retry, error, "chat", form)
        return _sent(request, chat.conversation_id, index)

    def ask(request: Request, conversation_id: str, form: dict[str, str]) -> Response:
        if (forged := pages.forged(request, form["csrf"])) is not None:
            return forged
        try:
            index = client.live(conversation_id).send(form["question"])
        except BlendError as error:
            return _refusal(request, retry, error, conversation_id, form)
        return _sent(request, conversation_id, index)

    # async only to read the body; the work (database, broker) runs on the thread pool
    @router.post("/chat", dependencies=[pages.poster])
    async def _start(request: Request) -> Response:
        return await _posted(request, lambda form: start(request, form))

    @router.post("/conversations/{conversation_id}/turns", dependencies=[pages.poster])
    async def _ask(request: Request, conversation_id: str) -> Response:
        return await _posted(request, lambda form: ask(request, conversation_id, form))


async def _posted(request: Request, handle: Callable[[dict[str, str]], Response]) -> Response:
    """``handle(form)`` on the thread pool (it reads the database and sends to the broker)."""
    try:
        form = await read_form(request)
    except InputError as error:
        return JSONResponse({"error": str(error)}, status_code=413)
    return await run_in_threadpool(handle, form)


def _variant(client: BlendClient, model: str) -> tuple[str, str]:
    """(method, policy) of a model id from ``/v1/models``; the plain blend when none is chosen."""
    try:
        return parse_model(model or client.committee.name, client.committee)
    except ChatError as error:
        raise InputError(f"{error.message}; choose one of {', '.join(model_ids(client.committee))}") from None


def _sent(request: Request, conversation_id: str, index: int) -> Response:
    page = f"/conversations/{conversation_id}"
    if wants_json(request):
        return JSONResponse(
            {
                "conversation": conversation_id,
                "turn": index,
                "number": index + 1,
                "events": f"{page}/turns/{index}/events",
                "fragment": f"{page}/turns/{index}",
            },
            status_code=202,
        )
    return RedirectResponse(f"{page}#turn-{index + 1}", status_code=303)


def _refusal(request: Request, retry: Retry, error: BlendError, where: str, form: dict[str, str]) -> Response:
    """The error on the page the form was on, with what was typed kept (or as JSON)."""
    status = (
        409 if isinstance(error, TurnInProgress) else 503 if isinstance(error, ServiceUnavailable) else 400
    )
    if not isinstance(error, InputError | ServiceUnavailable):
        status = 502  # the question was stored but could not be sent: a broker or database failed
    if wants_json(request):
        return JSONResponse({"error": str(error)}, status_code=status)
    return retry(request, where, {"error": str(error), "form": form}, status)
