"""The web pages of ``peerblend serve``: chat, conversations, candidates, ballots, runs.

    GET /, /conversations             conversations, newest first (filters and pages in the query),
                                      and the form that starts a chat
    GET /conversations.json           the same list's rows as HTML and a signature: what it polls
    GET /conversations/{id}           every turn: question, candidates, ballots, scores, decision,
                                      why; a live conversation's box for the next question
    GET /conversations/{id}.json      (turns so far, turns stored)
    GET /conversations/{id}/turns/{i} one turn's section (i from 0), as the page renders it
    GET /conversations/{id}/turns/{i}/events   the turn's stages as server-sent events
    POST /chat, /conversations/{id}/turns      start a chat, ask the next question (web_chat)
    GET /runs                         replay runs, and the report ``peerblend report`` wrote

Server-rendered (Jinja2 templates and static files next to this module, served by the
same app); small scripts follow a running turn's events (``web_stream``), post the chat
box and refresh the list. When the server has API keys, the pages want one too:
``Authorization: Bearer``, or ``?key=`` once (kept in a SameSite=Strict cookie), checked
by one dependency on each route (``workers.auth``); a POST also carries the form's token
(``web_pages.FormGuard``). Routes are plain ``def`` (FastAPI
runs them on its thread pool) except the event stream, which reads on the thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from pipeline.service.client import BlendClient
from workers.chat import model_ids
from workers.server_options import ServerOptions
from workers.web_chat import chat_routes
from workers.web_evaluate import evaluation_routes
from workers.web_pages import STATIC, Pages, file_in
from workers.web_stream import turn_exists, turn_stream
from workers.web_views import ballot_view, conversation_view

__all__ = ["Pages", "ballot_view", "conversation_view", "web_router"]


class ConversationFilters(BaseModel):
    """The list's query: filters (blank means any), 1-based page, rows per page."""

    run: str | None = None
    committee: str | None = None
    method: str | None = None
    policy: str | None = None
    status: Literal["finished", "running"] | None = None
    page: int = Field(1, ge=1)
    per_page: int = Field(25, ge=1, le=200)

    @field_validator("run", "committee", "method", "policy", "status", mode="before")
    @classmethod
    def _blank_is_any(cls, value: Any) -> Any:
        return value or None

    def url(self, **changes: Any) -> str:
        """This query with ``changes``, as a link to the list."""
        fields = {**self.model_dump(exclude_defaults=True), **changes}
        return "/conversations" + (f"?{urlencode(fields)}" if fields else "")


def web_router(client: BlendClient, options: ServerOptions) -> APIRouter:
    """The pages' routes. ``options.flower_url`` links each turn to its tasks in Flower."""
    router, pages = APIRouter(include_in_schema=False), Pages(options)
    flower_url = (options.flower_url or "").rstrip("/") or None
    report_dir = options.report_dir
    _list_routes(router, client, pages)
    _conversation_routes(router, client, pages, flower_url)
    _stream_routes(router, client, pages, options.turn_timeout_s, flower_url)
    evaluation_routes(router, client, pages, report_dir)  # /evaluate and /runs (web_evaluate)

    def retry(request: Request, where: str, context: dict[str, Any], status: int) -> Response:
        """A refused chat form: its page again, with the error and what was typed."""
        if where == "chat":
            return _list_page(request, client, pages, ConversationFilters.model_validate({}), context, status)
        return _conversation_page(request, client, pages, where, flower_url, context, status)

    chat_routes(router, client, pages, retry)

    @router.get("/static/{name}")
    def _static(name: str) -> Response:
        return file_in(STATIC, name, suffixes=(".css", ".js"))

    return router


def _list_routes(router: APIRouter, client: BlendClient, pages: Pages) -> None:
    @router.get("/", dependencies=[pages.reader])
    @router.get("/conversations", dependencies=[pages.reader])
    def _conversations(request: Request, filters: Annotated[ConversationFilters, Query()]) -> Response:
        return _list_page(request, client, pages, filters)

    @router.get("/conversations.json", dependencies=[pages.json_reader])
    def _rows(request: Request, filters: Annotated[ConversationFilters, Query()]) -> Response:
        """The list's rows (what its script swaps in) and a signature that changes with them."""
        rows, total = _listed(client, filters)
        html = pages.templates.get_template("conversation_rows.html").render(rows=rows)
        return JSONResponse({"total": total, "signature": list_signature(rows, total), "rows": html})


def _listed(client: BlendClient, filters: ConversationFilters) -> tuple[list[Any], int]:
    """One page of the list: (conversation, turns stored, first question) rows, and the total."""
    return client.store.list_conversations(
        **filters.model_dump(include={"run", "committee", "method", "policy", "status"}),
        offset=(filters.page - 1) * filters.per_page,
        limit=filters.per_page,
    )


def list_signature(rows: list[Any], total: int) -> str:
    """Changes when a row is added or a turn is asked or stored (what the list's script compares)."""
    return f"{total}:" + ",".join(f"{c.id}/{c.n_turns}/{stored}" for c, stored, _ in rows)


def _list_page(
    request: Request,
    client: BlendClient,
    pages: Pages,
    filters: ConversationFilters,
    extra: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    """The list, with the chat form above it (``extra``: a refused form's error and fields)."""
    rows, total = _listed(client, filters)
    facets = client.store.facets()
    context = {
        "rows": rows,
        "total": total,
        "filters": filters,
        "facets": facets,
        "pages": max(1, -(-total // filters.per_page)),
        "signature": list_signature(rows, total),
        "models": model_ids(client.committee),
        "form": {},
        **(extra or {}),
    }
    return pages.render(request, "conversations.html", context, status_code=status_code)


def _conversation_routes(
    router: APIRouter, client: BlendClient, pages: Pages, flower_url: str | None
) -> None:
    @router.get("/conversations/{conversation_id}.json", dependencies=[pages.json_reader])
    def _progress(request: Request, conversation_id: str) -> Response:
        progress = client.store.conversation_progress(conversation_id)
        if progress is None:
            return JSONResponse({"error": f"no conversation with id {conversation_id!r}"}, status_code=404)
        turns, stored = progress
        return JSONResponse(
            {"id": conversation_id, "turns": turns, "stored": stored, "running": stored < turns}
        )

    @router.get("/conversations/{conversation_id}", dependencies=[pages.reader])
    def _conversation(request: Request, conversation_id: str) -> Response:
        return _conversation_page(request, client, pages, conversation_id, flower_url)


def _conversation_page(
    request: Request,
    client: BlendClient,
    pages: Pages,
    conversation_id: str,
    flower_url: str | None,
    extra: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    view = conversation_view(client, conversation_id, flower_url)
    if view is None:
        context = {"message": f"There is no conversation with id {conversation_id!r}."}
        return pages.render(request, "missing.html", context, status_code=404)
    return pages.render(request, "conversation.html", {"form": {}, **view, **(extra or {})}, status_code)


def _stream_routes(
    router: APIRouter, client: BlendClient, pages: Pages, limit_s: float, flower_url: str | None
) -> None:
    @router.get(
        "/conversations/{conversation_id}/turns/{turn_index}/events", dependencies=[pages.json_reader]
    )
    def _events(request: Request, conversation_id: str, turn_index: int) -> Response:
        if not turn_exists(client, conversation_id, turn_index):
            message = f"conversation {conversation_id!r} has no turn {turn_index} (turns count from 0)"
            return JSONResponse({"error": message}, status_code=404)
        stream = turn_stream(request, client, conversation_id, turn_index, limit_s=limit_s)
        # no-transform and X-Accel-Buffering: a proxy must pass each event on as it comes
        headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    @router.get("/conversations/{conversation_id}/turns/{turn_index}", dependencies=[pages.reader])
    def _turn(request: Request, conversation_id: str, turn_index: int) -> Response:
        """One turn's section as the conversation page renders it (the script swaps it in)."""
        view = conversation_view(client, conversation_id, flower_url)
        turns = [t for t in (view or {}).get("turns", []) if t["number"] == turn_index + 1]
        if view is None or not turns:
            message = f"conversation {conversation_id!r} has no turn {turn_index} (turns count from 0)"
            return JSONResponse({"error": message}, status_code=404)
        return pages.render(request, "turn.html", {**view, "turn": turns[0]})
