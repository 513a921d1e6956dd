"""The read-only web pages of ``peerblend serve``: conversations, candidates, ballots, runs.

    GET /, /conversations             conversations, newest first; filters and pages in the query
    GET /conversations/{id}           every turn: question, candidates, ballots, scores, decision
    GET /conversations/{id}.json      (turns so far, turns stored): what the page polls while running
    GET /runs                         replay runs, and the report ``peerblend report`` wrote

Server-rendered (Jinja2 templates and static files next to this module, served by
the same app); a little JavaScript reloads a conversation's page when a turn is
stored. When the server has API keys, the pages want one too: ``Authorization:
Bearer``, or ``?key=`` once (kept in a cookie). Routes are plain ``def``: FastAPI
runs them on its thread pool, so database work never blocks the event loop.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session

from db import crud
from pipeline.canvas import final_task_id
from pipeline.client import BlendClient, StoredConversation, StoredTurn
from pipeline.errors import InputError
from workers.web_evaluate import evaluation_routes

if TYPE_CHECKING:
    from workers.serve import ServerOptions

HERE = Path(__file__).resolve().parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
KEY_COOKIE = "peerblend_key"
STAGES = (("generation_s", "generate"), ("review_s", "review"), ("aggregate_s", "aggregate"))
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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


class Pages:
    """Templates and the key check every page goes through."""

    def __init__(self, options: ServerOptions) -> None:
        self.keys = options.api_keys
        self.templates = Jinja2Templates(directory=TEMPLATES)

    def _given(self, request: Request) -> list[str]:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return [bearer, request.query_params.get("key", ""), request.cookies.get(KEY_COOKIE, "")]

    def denied(self, request: Request, *, json: bool = False) -> Response | None:
        """None when the request may read; else the 401 answer (a key form, or JSON)."""
        if not self.keys or any(key in self.keys for key in self._given(request)):
            return None
        message = "this server wants an API key: Authorization: Bearer <key>, or ?key=<key>"
        if json:
            return JSONResponse({"error": message}, status_code=401)
        return self.render(request, "denied.html", {"message": message}, status_code=401)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        response = self.templates.TemplateResponse(request, name, context, status_code=status_code)
        key = request.query_params.get("key", "")
        if key and key in self.keys:  # given once in the address: later pages send it as a cookie
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response


def web_router(client: BlendClient, options: ServerOptions) -> APIRouter:
    """The pages' routes. ``options.flower_url`` links each turn to its tasks in Flower."""
    router, pages = APIRouter(include_in_schema=False), Pages(options)
    flower_url = (options.flower_url or "").rstrip("/") or None
    report_dir = options.report_dir
    _list_routes(router, client, pages)
    _conversation_routes(router, client, pages, flower_url)
    evaluation_routes(router, client, pages, report_dir)  # /evaluate and /runs (web_evaluate)

    @router.get("/static/{name}")
    def _static(name: str) -> Response:
        return _file_in(STATIC, name, suffixes=(".css", ".js"))

    return router


def _list_routes(router: APIRouter, client: BlendClient, pages: Pages) -> None:
    @router.get("/")
    @router.get("/conversations")
    def _conversations(request: Request, filters: Annotated[ConversationFilters, Query()]) -> Response:
        if (denied := pages.denied(request)) is not None:
            return denied
        with Session(client.engine) as session:
            rows, total = crud.list_conversations(
                session=session,
                **filters.model_dump(include={"run", "committee", "method", "policy", "status"}),
                offset=(filters.page - 1) * filters.per_page,
                limit=filters.per_page,
            )
            facets = crud.conversation_facets(session=session)
        pages_total = max(1, -(-total // filters.per_page))
        context = {"rows": rows, "total": total, "filters": filters, "facets": facets, "pages": pages_total}
        return pages.render(request, "conversations.html", context)


def _conversation_routes(
    router: APIRouter, client: BlendClient, pages: Pages, flower_url: str | None
) -> None:
    @router.get("/conversations/{conversation_id}.json")
    def _progress(request: Request, conversation_id: str) -> Response:
        if (denied := pages.denied(request, json=True)) is not None:
            return denied
        with Session(client.engine) as session:
            progress = crud.conversation_progress(session=session, conversation_id=conversation_id)
        if progress is None:
            return JSONResponse({"error": f"no conversation with id {conversation_id!r}"}, status_code=404)
        turns, stored = progress
        return JSONResponse(
            {"id": conversation_id, "turns": turns, "stored": stored, "running": stored < turns}
        )

    @router.get("/conversations/{conversation_id}")
    def _conversation(request: Request, conversation_id: str) -> Response:
        if (denied := pages.denied(request)) is not None:
            return denied
        view = conversation_view(client, conversation_id, flower_url)
        if view is None:
            context = {"message": f"There is no conversation with id {conversation_id!r}."}
            return pages.render(request, "missing.html", context, status_code=404)
        return pages.render(request, "conversation.html", view)


def _file_in(folder: Path, name: str, *, suffixes: tuple[str, ...]) -> Response:
    """A file directly in ``folder`` with one of ``suffixes``, or 404 (no other path can be named)."""
    path = folder / name
    if not (folder.is_dir() and path.suffix in suffixes and path in folder.iterdir() and path.is_file()):
        return JSONResponse({"error": f"no file {name!r}"}, status_code=404)
    return FileResponse(path, media_type=mimetypes.guess_type(name)[0], headers={"Cache-Control": "no-cache"})


def conversation_view(
    client: BlendClient, conversation_id: str, flower_url: str | None
) -> dict[str, Any] | None:
    """What the conversation page shows; None when there is no such conversation."""
    try:
        stored = client.fetch(conversation_id)
    except InputError:
        return None
    with Session(client.engine) as session:
        row = crud.get_conversation(session=session, conversation_id=conversation_id)
        attempts = {
            t.turn_index: t.attempt for t in crud.list_turns(session=session, conversation_id=conversation_id)
        }
    if row is None:
        return None
    done = sum(t.result is not None for t in stored.turns)
    turns = [
        turn_view(t, stored, attempt=attempts.get(t.turn_index, 1), flower_url=flower_url)
        for t in stored.turns
    ]
    return {"conversation": row, "turns": turns, "n_turns": len(stored.turns), "stored": done}


def turn_view(
    turn: StoredTurn, conversation: StoredConversation, *, attempt: int, flower_url: str | None
) -> dict[str, Any]:
    """One turn for the page: numbered from 1, its bars and links computed."""
    result = turn.result or {}
    decision = result.get("decision") or {}
    ranked = bool(decision.get("ranked", bool(decision.get("reviewers"))))
    single = conversation.method.startswith("single:")
    flower = None
    if flower_url:
        task = final_task_id(conversation.id, turn.turn_index, max(attempt, 1))
        flower = {
            "task": f"{flower_url}/task/{task}",
            "tasks": f"{flower_url}/tasks",
            "search": f"conversation={conversation.id} turn={turn.turn_index + 1}",
        }
    return {
        "number": turn.turn_index + 1,
        "question": turn.question,
        "gold": turn.gold,
        "result": turn.result,
        "decision": decision,
        "ranked": ranked,
        "unranked": "not ranked (single member)" if single else "not ranked (reused)",
        "candidates": candidate_cards(turn, result),
        "ballots": [ballot_view(review, decision) for review in turn.reviews],
        "scores": score_bars(result) if ranked else [],
        "timings": timing_bar(result.get("timings") or {}),
        "flower": flower,
    }


def candidate_cards(turn: StoredTurn, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every candidate with its place in the ranking (1 = best) and whether it was chosen."""
    ranking, scores = list(result.get("ranking") or []), result.get("scores") or {}
    return [
        {
            **c,
            "chosen": c["member"] == result.get("chosen"),
            "place": ranking.index(c["member"]) + 1 if c["member"] in ranking else None,
            "score": scores.get(c["member"]),
        }
        for c in turn.candidates
    ]


def ballot_view(review: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """A ballot with the labels its reviewer saw: ``shown`` and ``order`` (best first) as [(label, member)],
    and ``voters``: the reviewers it was cast for (a voter group's one review; the reviewer alone on
    rows stored before groups were)."""
    shown = list(zip(LABELS, review.get("shown_order") or [], strict=False))
    label = {member: letter for letter, member in shown}
    order = [(label.get(member, "?"), member) for member in review.get("ranking") or []]
    weight = (decision.get("ballot_weights") or {}).get(review["reviewer"])
    voters = review.get("voters") or [review["reviewer"]]
    return {**review, "shown": shown, "order": order, "weight": weight, "voters": voters}


def score_bars(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Borda scores in ranking order, each with a bar width in percent of the largest magnitude."""
    scores: dict[str, float] = result.get("scores") or {}
    order = [m for m in result.get("ranking") or [] if m in scores] + [
        m for m in scores if m not in (result.get("ranking") or [])
    ]
    top = max((abs(v) for v in scores.values()), default=0.0) or 1.0
    return [
        {
            "member": m,
            "score": scores[m],
            "width": 100 * abs(scores[m]) / top,
            "chosen": m == result.get("chosen"),
        }
        for m in order
    ]


def timing_bar(timings: dict[str, float]) -> dict[str, Any]:
    """The stages as segments of one bar (percent of their sum), and the turn's total seconds."""
    seconds = [(label, float(timings.get(key, 0.0))) for key, label in STAGES]
    whole = sum(s for _, s in seconds) or 1.0
    segments = [{"stage": label, "seconds": s, "width": 100 * s / whole} for label, s in seconds]
    return {"segments": segments, "total": float(timings.get("total_s", sum(s for _, s in seconds)))}
