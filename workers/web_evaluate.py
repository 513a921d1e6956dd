"""Blind human evaluation and the runs page of ``peerblend serve``.

    GET  /evaluate                    the judge's name and a pair of runs; pairs judged so far
    POST /evaluate/start              keeps the name in a cookie, opens the pair's next turn
    GET  /evaluate?first=X&second=Y   the next turn of that pair: the conversation so far, the
                                      passage, the question and the two answers as A and B
    POST /evaluate                    stores a judgement (A, B or tie, a note), then the next turn
    GET  /evaluate/export.csv         every judgement as CSV (as ``peerblend evaluate export``)
    GET  /runs                        replay runs, the report's tables and time-quality plot from
                                      the database, human win rates, and the committed report
    GET  /runs/report/{name}          a plot of the committed report

Which turn comes next and how judgements add up is pipeline/evaluation/human.py's; the
rows are db/judgements.py's. The page never names the runs behind A and B; the form
carries which side was which (``a``: 1 when the pair's first run is A) and the draw's
seed, which makes a form sent twice store one judgement. Same keys and form tokens as
the other pages (the ``Pages.reader`` and ``Pages.poster`` dependencies, ``Pages.forged``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from db.models import HumanJudgement
from pipeline.errors import InputError
from pipeline.evaluation import human
from pipeline.evaluation.human import CHOICES, TurnKey
from pipeline.service.client import BlendClient
from pipeline.service.store import Store
from workers.web_pages import file_in
from workers.web_runs import runs_view

if TYPE_CHECKING:
    from workers.web_pages import Pages

JUDGE_COOKIE = "peerblend_judge"
MAX_NAME_CHARS, MAX_NOTE_CHARS = 60, 2000


def evaluation_routes(router: APIRouter, client: BlendClient, pages: Pages, report_dir: Path) -> None:
    """Register ``/evaluate`` and ``/runs`` (see the module docstring)."""
    _judging_routes(router, client, pages)
    _run_routes(router, client, pages, report_dir)


def _judging_routes(router: APIRouter, client: BlendClient, pages: Pages) -> None:
    @router.get("/evaluate", dependencies=[pages.reader])
    def _evaluate(request: Request, first: str = "", second: str = "", change: str = "") -> Response:
        judge = judge_name(request)
        if not (first and second and judge) or change:
            return _start_page(request, client, pages, (first, second), judge)
        try:
            pair = human.run_pair(first, second)
        except InputError as error:
            return _start_page(request, client, pages, (first, second), judge, str(error), 400)
        if pair != (first, second):  # one address per pair, whichever way it was asked
            return RedirectResponse(pair_url(pair), status_code=303)
        return pages.render(request, "evaluate.html", judging_view(client, pair, judge))

    @router.post("/evaluate/start", dependencies=[pages.poster])
    def _start(
        request: Request,
        name: str = Form(""),
        first: str = Form(""),
        second: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        if (forged := pages.forged(request, csrf)) is not None:
            return forged
        name = " ".join(name.split())
        problem = _name_problem(name) or (None if first and second else "pick two runs to compare")
        if problem is None and first == second:
            problem = f"pick two different runs to compare, got {first!r} twice"
        if problem is not None:
            return _start_page(request, client, pages, (first, second), name, problem, 400)
        response = RedirectResponse(pair_url(human.run_pair(first, second)), status_code=303)
        response.set_cookie(JUDGE_COOKIE, quote(name), samesite="strict", max_age=365 * 86400)
        return response

    @router.post("/evaluate", dependencies=[pages.poster])
    def _judge(
        request: Request,
        first: str = Form(""),
        second: str = Form(""),
        dataset: str = Form(""),
        external_id: str = Form(""),
        turn: str = Form(""),
        seed: str = Form(""),
        a: str = Form(""),
        choice: str = Form(""),
        note: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        if (forged := pages.forged(request, csrf)) is not None:
            return forged
        form = {"first": first, "second": second, "dataset": dataset, "external_id": external_id}
        form |= {"turn": turn, "seed": seed, "a": a, "choice": choice, "note": note}
        return _store_judgement(request, client, pages, form)

    _export_route(router, client, pages)


def _export_route(router: APIRouter, client: BlendClient, pages: Pages) -> None:
    @router.get("/evaluate/export.csv", dependencies=[pages.reader])
    def _export(request: Request) -> Response:
        text = human.render_csv(client.store.judged())
        headers = {"Content-Disposition": 'attachment; filename="judgements.csv"'}
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)


def judge_name(request: Request) -> str:
    """The name kept in the judge's cookie ("" when there is none or it is not a usable name)."""
    name = unquote(request.cookies.get(JUDGE_COOKIE, ""))
    return name if _name_problem(name) is None else ""


def _name_problem(name: str) -> str | None:
    if not name:
        return "type your name (it is stored with each judgement)"
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        return f"a name is 1 to {MAX_NAME_CHARS} printable characters"
    return None


def pair_url(pair: tuple[str, str]) -> str:
    return "/evaluate?" + urlencode({"first": pair[0], "second": pair[1]})


def _start_page(
    request: Request,
    client: BlendClient,
    pages: Pages,
    chosen: tuple[str, str],
    judge: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The name, the two runs to compare, and every pair judged so far with its progress."""
    runs = client.store.runs_with_answers()
    pairs = [
        {"pair": pair, "url": pair_url(pair), **_pair_state(client.store, pair)}
        for pair in client.store.judged_pairs()
    ]
    context = {"runs": runs, "pairs": pairs, "chosen": chosen, "judge": judge, "error": error}
    return pages.render(request, "evaluate_start.html", context, status_code=status_code)


def _pair_state(store: Store, pair: tuple[str, str]) -> dict[str, Any]:
    """A pair's pool of turns, its judgements, where the judging stands and its win rate."""
    pool = human.pair_pool(store.run_answers(pair[0]), store.run_answers(pair[1]))
    judged = store.pair_judged(*pair)
    rates = human.win_rates(judged, resamples=500)
    return {
        "pool": pool,
        "judged": judged,
        "progress": human.progress(pool.turns, judged),
        "rate": rates[0] if rates else None,
    }


def judging_view(client: BlendClient, pair: tuple[str, str], judge: str) -> dict[str, Any]:
    """The judging page: the pair's next turn for this judge (``item`` None when there is none)."""
    state = _pair_state(client.store, pair)
    drawn = human.next_draw(state["pool"].turns, state["judged"], judge=judge, seed=secrets.randbits(62))
    item = None
    if drawn is not None:
        conversations = state["pool"].turns[drawn.turn]
        sides = conversations if drawn.first_is_a else conversations[::-1]
        shown = [client.store.shown_turn(c, drawn.turn.turn_index) for c in sides]
        if shown[0] is not None and shown[1] is not None:
            item = _item(drawn, shown[0], shown[1])
    mine = sum(j.judge == judge for j in state["judged"])
    return {"pair": pair, "judge": judge, "item": item, "mine": mine, **state}


def _item(drawn: human.Draw, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One turn as the judge sees it: each earlier exchange with both sides' answers, then A and B."""
    before = [
        {"question": qa[0], "a": qa[1], "b": qb[1]} for qa, qb in zip(a["before"], b["before"], strict=False)
    ]
    return {
        "draw": drawn,
        "number": drawn.turn.turn_index + 1,
        "passage": a["passage"],
        "before": before,
        "question": a["question"],
        "gold": a["gold"],
        "answers": {"A": a["answer"], "B": b["answer"]},
    }


def _store_judgement(request: Request, client: BlendClient, pages: Pages, form: dict[str, str]) -> Response:
    """Check the posted judgement against the pair's pool, store it, go on to the next turn."""
    judge = judge_name(request)
    if not judge:
        return RedirectResponse("/evaluate", status_code=303)
    try:
        client.store.save_judgement(posted_judgement(client.store, form, judge))
    except InputError as error:
        context = {"message": str(error), "title": "Judgement refused"}
        return pages.render(request, "denied.html", context, status_code=400)
    return RedirectResponse(pair_url((form["first"], form["second"])), status_code=303)


def posted_judgement(store: Store, form: dict[str, str], judge: str) -> HumanJudgement:
    """The row a posted judging form stands for; InputError naming the field that does not fit."""
    pair = human.run_pair(form["first"], form["second"])
    if pair != (form["first"], form["second"]):
        raise InputError("first and second must be the pair's runs in name order (as the page posts them)")
    if form["choice"] not in CHOICES:
        raise InputError(f"choice must be one of {', '.join(CHOICES)}, got {form['choice']!r}")
    if form["a"] not in ("1", "2"):
        raise InputError(f"a must be 1 (the first run was A) or 2, got {form['a']!r}")
    if len(form["note"]) > MAX_NOTE_CHARS:
        raise InputError(f"a note is at most {MAX_NOTE_CHARS} characters, got {len(form['note'])}")
    try:
        turn, seed = int(form["turn"]), int(form["seed"])
    except ValueError:
        raise InputError(
            f"turn and seed must be integers, got {form['turn']!r} and {form['seed']!r}"
        ) from None
    key = TurnKey(form["dataset"], form["external_id"], turn)
    pool = human.pair_pool(store.run_answers(pair[0]), store.run_answers(pair[1]))
    if key not in pool.turns:
        raise InputError(
            f"runs {pair[0]} and {pair[1]} do not both answer turn {turn + 1} of {key.external_id}"
        )
    first_conversation, second_conversation = pool.turns[key]
    return HumanJudgement(
        judge=judge,
        first_run=pair[0],
        second_run=pair[1],
        shown_a=pair[0] if form["a"] == "1" else pair[1],
        dataset=key.dataset,
        external_id=key.external_id,
        turn_index=key.turn_index,
        first_conversation_id=first_conversation,
        second_conversation_id=second_conversation,
        choice=form["choice"],
        note=form["note"].strip(),
        seed=seed,
    )


def _run_routes(router: APIRouter, client: BlendClient, pages: Pages, report_dir: Path) -> None:

    @router.get("/runs", dependencies=[pages.reader])
    def _runs(request: Request) -> Response:
        return pages.render(request, "runs.html", runs_view(client, report_dir))

    @router.get("/runs/report/{name}", dependencies=[pages.reader])
    def _plot(request: Request, name: str) -> Response:
        return file_in(report_dir, name, suffixes=(".png",))
