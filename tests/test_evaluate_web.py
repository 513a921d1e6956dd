"""Blind human evaluation (/evaluate), the runs page's report (/runs), the judgements' table and
``peerblend evaluate export``: over HTTP with FastAPI's TestClient, in headless chromium with
selenium (a whole session judged with the keyboard), and the migration on SQLite and PostgreSQL.

Two small runs of the scripted story committee (tests/screenshots.py) answer the same three
two-turn conversations: ``…-m0`` is member m0 alone, ``…-m1`` member m1 alone, so every turn has
two different answers to judge.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlmodel import Session

from db import judgements as store
from db.engine import get_engine
from db.migrate import alembic_config, upgrade
from db.models import Conversation, HumanJudgement, Turn, TurnResult
from pipeline.service.client import BlendClient
from pipeline.service.store import Store
from tests.screenshots import STORY, browser_problem, chrome, free_port, save_page, serve_in_thread
from tests.screenshots import story_committee as _story_committee
from workers.serve import ServerOptions, create_api
from workers.web_pages import Pages
from workers.web_runs import runs_view

COMMITTEE = _story_committee(delay_s=0.6, name="web")  # test_web's: one embedded deployment for both
KEY = "eval-key-1"
_RUNS: dict[str, tuple[str, str]] = {}


@pytest.fixture
def client(embedded: Callable[..., BlendClient]) -> BlendClient:
    return embedded(COMMITTEE)


def _conversations(tag: str) -> list[dict[str, Any]]:
    return [{**STORY, "id": f"{tag}-dune-{i}"} for i in range(3)]


def make_runs(client: BlendClient, tag: str) -> tuple[str, str]:
    """Two runs (m0 alone, m1 alone) over the same three conversations: 6 turns to judge."""
    runs = (f"{tag}-m0", f"{tag}-m1")
    for run, member in zip(runs, ("m0", "m1"), strict=True):
        handles = [client.submit(c, run=run, method=f"single:{member}") for c in _conversations(tag)]
        for handle in handles:
            handle.wait(timeout=60)
    return runs


@pytest.fixture
def runs(client: BlendClient) -> tuple[str, str]:
    """A pair of runs for this module (made once; tests judge them through their own pair names)."""
    if "pair" not in _RUNS:
        _RUNS["pair"] = make_runs(client, f"eval-{uuid.uuid4().hex[:6]}")
    return _RUNS["pair"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium (tests/browser.sh installs it; test_web installs it if missing)."""
    if (problem := browser_problem()) is not None:
        pytest.skip(problem)
    driver = chrome()
    yield driver
    driver.quit()


def _by(selector: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, selector


def _wait(driver: Any, seconds: float) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, seconds, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )


def _http(client: BlendClient, **options: Any) -> TestClient:
    return TestClient(create_api(client, ServerOptions(**options)))


def _fields(html: str, form_id: str) -> dict[str, str]:
    """The named inputs of one form (hidden, text; not radios) as the page rendered them."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, flags=re.S)
    assert form is not None, f"no form {form_id} on the page"
    inputs = re.findall(r'<input type="(?:hidden|text)" name="(\w+)"(?: value="([^"]*)")?', form.group(0))
    return {name: unescape(value) for name, value in inputs}


def _start(http: TestClient, name: str, pair: tuple[str, str]) -> str:
    """Type a name, choose the pair; the judging page's address."""
    page = http.get("/evaluate")
    assert page.status_code == 200 and 'id="start"' in page.text
    form = {**_fields(page.text, "start"), "name": name, "first": pair[1], "second": pair[0]}
    started = http.post("/evaluate/start", data=form, follow_redirects=False)
    assert started.status_code == 303, started.text
    return started.headers["location"]


def _judge(http: TestClient, where: str, choice: str, note: str = "") -> dict[str, str]:
    """Open the next turn, pick ``choice`` as shown; the posted form."""
    page = http.get(where)
    assert page.status_code == 200 and 'id="item"' in page.text, page.text[-500:]
    form = {**_fields(page.text, "judge"), "choice": choice, "note": note}
    posted = http.post("/evaluate", data=form, follow_redirects=False)
    assert posted.status_code == 303, posted.text
    return form


def _stored(client: BlendClient, pair: tuple[str, str]) -> list[Any]:
    return client.store.pair_judged(*pair)


def test_a_blind_session_over_http(client: BlendClient, runs: tuple[str, str]) -> None:
    # Given: a person starts judging the pair, naming it in either order
    pair = (f"{runs[0]}", f"{runs[1]}")
    tag = uuid.uuid4().hex[:6]
    http = _http(client)
    where = _start(http, f"Ada {tag}", pair)
    assert where.startswith("/evaluate?first=") and http.cookies.get("peerblend_judge") == f"Ada%20{tag}"
    before = len(_stored(client, pair))

    # When the page is opened: one question, two answers, no run or member named
    page = http.get(where).text
    item = page[page.index('id="item"') : page.index("</section>")]
    visible = re.sub(r"<[^>]+>", " ", item)
    assert "Who wrote Dune?" in visible or "When was it first published?" in visible
    assert not any(name in visible for name in (*pair, "m0", "m1", "single")), visible
    assert 'id="answer-a"' in item and 'id="answer-b"' in item

    # When a judgement is posted twice (a double click), then it is stored once, sides resolved
    form = _judge(http, where, "A", note="terse but right")
    assert http.post("/evaluate", data=form, follow_redirects=False).status_code == 303
    stored = _stored(client, pair)[before:]
    assert len(stored) == 1
    mine = stored[0]
    assert (mine.judge, mine.choice, mine.note) == (f"Ada {tag}", "A", "terse but right")
    assert mine.shown_a == (pair[0] if form["a"] == "1" else pair[1]) == mine.winner
    assert mine.turn.turn_index == int(form["turn"]) and mine.turn.external_id == form["external_id"]


def test_every_turn_is_judged_once_before_any_twice_and_the_report_counts(
    client: BlendClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pair of its own (6 turns) and a person judging 8 times: B, tie, A, B, tie, A, B, tie
    pair = make_runs(client, f"rounds-{uuid.uuid4().hex[:6]}")
    http = _http(client)
    where = _start(http, "Grace", pair)
    choices = ["B", "tie", "A"] * 2 + ["B", "tie"]
    forms = [_judge(http, where, choice) for choice in choices]

    # Then the first six judgements are six different turns; the next two, two of them again
    stored = _stored(client, pair)
    turns = [j.turn for j in stored]
    assert len(set(turns[:6])) == 6 and len(set(turns)) == 6
    assert "all 6 judged 1×; 2 of 6 judged again" in http.get(where).text
    shown_first = sum(j.shown_a == pair[0] for j in stored)
    assert abs(shown_first - (len(stored) - shown_first)) <= 1  # A/B balanced
    expected = Counter(
        "tie" if j.winner is None else "win" if j.winner == pair[0] else "loss" for j in stored
    )
    assert [f["choice"] for f in forms] == [j.choice for j in stored]

    # And /runs shows the pair's counts; the export lists the eight judgements
    runs_page = http.get("/runs").text
    row = re.search(rf'<tr class="human-pair" data-first="{pair[0]}".*?</tr>', runs_page, flags=re.S)
    assert row is not None
    counts = [int(v) for v in re.findall(r'class="num (?:wins|ties|losses)">(\d+)<', row.group(0))]
    assert counts == [expected["win"], expected["tie"], expected["loss"]] and sum(counts) == 8
    exported = list(csv.DictReader(io.StringIO(http.get("/evaluate/export.csv").text)))
    assert sum(r["first_run"] == pair[0] and r["judge"] == "Grace" for r in exported) == 8

    # And `peerblend evaluate export --out` and `peerblend report` say the same
    from workers.cli import main

    monkeypatch.setenv("PEERBLEND_DATABASE_URL", str(client.store.engine.url))
    assert main(["evaluate", "export", "--out", str(tmp_path / "judged.csv")]) == 0
    lines = list(csv.DictReader((tmp_path / "judged.csv").open(encoding="utf-8")))
    assert [r["choice"] for r in lines if r["first_run"] == pair[0]] == choices
    assert main(["report", *pair, "--no-bertscore", "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "results.md").read_text(encoding="utf-8")
    assert "## Human judgements (blind pairs)" in markdown
    assert (
        f"| {pair[0]} | {pair[1]} | {expected['win']} | {expected['tie']} | {expected['loss']} |" in markdown
    )


def test_refused_judgements_name_what_is_wrong(client: BlendClient, runs: tuple[str, str]) -> None:
    http = _http(client)
    where = _start(http, "Linus", runs)
    form = {**_fields(http.get(where).text, "judge"), "choice": "A"}
    before = len(_stored(client, runs))

    for change, message in (
        ({"choice": "C"}, "choice must be one of A, B, tie"),
        ({"turn": "9"}, "do not both answer turn 10"),
        ({"a": "3"}, "a must be 1"),
        ({"seed": "x"}, "must be integers"),
        ({"first": runs[1], "second": runs[0]}, "name order"),
    ):
        refused = http.post("/evaluate", data={**form, **change})
        assert refused.status_code == 400 and message in unescape(refused.text), (change, refused.text)
    forged = http.post("/evaluate", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    assert len(_stored(client, runs)) == before
    same = http.post(
        "/evaluate/start",
        data={**_fields(http.get("/evaluate").text, "start"), "name": "L"}
        | {"first": runs[0], "second": runs[0]},
    )
    assert same.status_code == 400 and "two different runs" in unescape(same.text)


def test_api_keys_guard_evaluation(client: BlendClient, runs: tuple[str, str]) -> None:
    http = _http(client, api_keys=frozenset({KEY}))
    assert http.get("/evaluate").status_code == 401
    assert http.get("/evaluate/export.csv").status_code == 401
    assert http.post("/evaluate", data={"choice": "A"}).status_code == 401
    assert http.get(f"/evaluate?key={KEY}").status_code == 200  # leaves the key's cookie
    assert http.get("/evaluate/export.csv").status_code == 200


def test_the_runs_page_renders_the_report_as_tables_and_a_plot(
    client: BlendClient, runs: tuple[str, str], tmp_path: Path
) -> None:
    # Given stored runs, and a committed report folder with its CSV
    (tmp_path / "results.csv").write_text(
        "method,dataset,metric,value,n_conversations,n_questions\n"
        "m9 (single),doqa,token_f1x100,12.5,4,9\n"
        "m9 (single),all,token_f1x100,12.5,4,9\n"
        "m9 (single),doqa,seconds_per_question,1.5,4,9\n"
        "m9 (single),all,seconds_per_question,1.5,4,9\n",
        encoding="utf-8",
    )
    (tmp_path / "results.md").write_text("# committed markdown\n", encoding="utf-8")
    http = _http(client, report_dir=tmp_path)

    html = http.get("/runs").text

    # Then the database's report is HTML tables (a row per run, dataset columns) with an SVG plot
    assert "No replay runs" not in html
    f1 = re.search(r'<table class="report-table" data-metric="token_f1x100">.*?</table>', html, flags=re.S)
    assert f1 is not None and '<th class="num">example</th>' in f1.group(0)
    for label in ("m0 (single)", "m1 (single)"):
        assert label in f1.group(0)
    assert '<svg class="tradeoff"' in html and html.count('class="method"') >= 2
    # and the committed report's tables come from its CSV, not its Markdown
    committed = html[html.index('id="committed"') :]
    assert "m9 (single)" in committed and "12.5" in committed and "# committed markdown" not in committed
    assert "<pre" not in html


def test_the_runs_page_without_runs_says_where_its_report_comes_from(tmp_path: Path) -> None:
    # Given an empty database of its own (the shared one holds other tests' runs; a second
    # embedded deployment in this process would share its Celery app) and a Markdown-only report
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    (tmp_path / "results.md").write_text("# only markdown\n", encoding="utf-8")
    empty: Any = type("Client", (), {"store": Store.at(url)})()  # the pages' views read client.store
    templates = Pages(ServerOptions()).templates

    html = templates.get_template("runs.html").render(csrf="", **runs_view(empty, tmp_path))
    start = templates.get_template("evaluate_start.html").render(
        csrf="", runs=[], pairs=[], chosen=("", ""), judge="", error=None
    )

    assert "No replay runs in this database" in html and "the report committed in" in html
    assert "# only markdown" in html  # a report written before the CSV was: shown as text
    assert "Report of these runs" not in html and "No blind judgements yet" in html
    assert "Blind pairs need two runs" in start


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (
        f"sqlite:///{tmp_path / 'j.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url)
    return url


def test_the_judgement_table_migrates_up_and_down(database: str) -> None:
    engine = get_engine(database)
    assert "human_judgement" in inspect(engine).get_table_names()
    command.downgrade(alembic_config(database), "0007")
    assert "human_judgement" not in inspect(engine).get_table_names()
    upgrade(database)

    # A judgement is stored once per draw (its seed), however often it is saved
    conversation_id = uuid.uuid4().hex
    with Session(engine) as session:
        session.add(Conversation(id=conversation_id, committee="c", method="peer", n_turns=1, run="r"))
        session.add(Turn(conversation_id=conversation_id, turn_index=0, question="q?"))
        session.commit()

        def row() -> HumanJudgement:
            return HumanJudgement(
                judge="ann",
                first_run="a",
                second_run="b",
                shown_a="b",
                dataset="d",
                external_id="x",
                turn_index=0,
                first_conversation_id=conversation_id,
                second_conversation_id=conversation_id,
                choice="B",
                seed=2**62 + 5,  # a 62-bit seed needs the BIGINT column
            )

        first, created = store.save_judgement(session=session, judgement=row())
        again, created_again = store.save_judgement(session=session, judgement=row())
    (read,) = Store(engine).judged(["a", "b"])
    assert (created, created_again, again.id) == (True, False, first.id)
    assert (read.winner, read.seed, read.turn.external_id) == ("a", 2**62 + 5, "x")  # B was "a"


def _judge_with_keys(browser: Any, keys: list[str], *, note_at: int) -> None:
    """Judge one turn per key (a, b or t, then Enter in the note it moves to); a note at ``note_at``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for done, key in enumerate(keys, start=1):
        seed = browser.find_element(*_by('input[name="seed"]')).get_attribute("value")
        ActionChains(browser).send_keys(key).perform()
        note = browser.switch_to.active_element
        assert note.get_attribute("name") == "note", "a pick moves to the note"
        if done == note_at:
            note.send_keys("B names the author")
        note.send_keys(Keys.ENTER)
        _wait(browser, 10).until(
            lambda d, s=seed: (
                d.find_elements(*_by("#item"))
                and d.find_element(*_by('input[name="seed"]')).get_attribute("value") != s
            )
        )
        assert f"{done} of {len(keys)} judged" in browser.find_element(*_by("#progress")).text or done == len(
            keys
        )


def _phone_widths(browser: Any) -> tuple[int, int]:
    """(the document's width, the window's) as a phone 390 CSS pixels wide shows the page."""
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
        return int(widths[0]), int(widths[1])
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_whole_blind_session_with_the_keyboard_in_a_browser(
    client: BlendClient,
    browser: Any,
    tmp_path: Path,
) -> None:
    # Given two runs of six turns, served on a port
    pair = make_runs(client, f"keys-{uuid.uuid4().hex[:6]}")
    port = free_port()
    server = serve_in_thread(create_api(client, ServerOptions()), port)
    site = f"http://127.0.0.1:{port}"
    try:
        # When a person types a name, chooses the pair, and judges six turns with a/b/t and Enter
        browser.get(f"{site}/evaluate")
        browser.find_element(*_by('input[name="name"]')).send_keys("Keyboard Kate")
        for field, run in (("first", pair[0]), ("second", pair[1])):
            browser.find_element(*_by(f'select[name="{field}"] option[value="{run}"]')).click()
        browser.find_element(*_by('#start button[type="submit"]')).click()
        _wait(browser, 10).until(lambda d: d.find_elements(*_by("#item")))
        assert "0 of 6 judged" in browser.find_element(*_by("#progress")).text
        save_page(browser, tmp_path / "evaluate.png")
        _judge_with_keys(browser, ["a", "b", "t", "a", "a", "b"], note_at=2)
        assert "all 6 judged 1×" in browser.find_element(*_by("#progress")).text

        # Then six judgements are stored, one per turn, as picked
        stored = _stored(client, pair)
        assert [j.choice for j in stored] == ["A", "B", "tie", "A", "A", "B"]
        assert len({j.turn for j in stored}) == 6 and {j.judge for j in stored} == {"Keyboard Kate"}
        assert stored[1].note == "B names the author"

        # And the page fits a phone: 390 px wide, nothing to scroll sideways
        browser.get(f"{site}/evaluate?first={quote(pair[0])}&second={quote(pair[1])}")
        document, window = _phone_widths(browser)
        assert document <= window == 390

        # And /runs reports the pair with those counts
        browser.get(f"{site}/runs")
        row = browser.find_element(*_by(f'tr.human-pair[data-first="{pair[0]}"]'))
        wins, ties, losses = (int(row.find_element(*_by(f".{c}")).text) for c in ("wins", "ties", "losses"))
        assert (wins, ties, losses) == (
            sum(j.winner == pair[0] for j in stored),
            1,
            sum(j.winner == pair[1] for j in stored),
        )
        assert wins + losses == 5
    finally:
        server.should_exit = True


@pytest.fixture(scope="module", autouse=True)
def _forget_runs() -> Iterator[None]:
    yield
    _RUNS.clear()


def test_the_plot_is_svg_with_escaped_names_and_a_log_axis_over_wide_ranges() -> None:
    from pipeline.evaluation.report import Point
    from workers.tradeoff_svg import tradeoff_svg

    points = [
        Point("<b>fast</b>", "all", 0.5, 20.0),
        Point("slow & good", "all", 40.0, 60.0),
        Point("slow & good", "doqa", 30.0, 55.0),
    ]

    svg = tradeoff_svg(points)

    assert svg is not None and svg.startswith('<svg class="tradeoff"')
    assert "&lt;b&gt;fast&lt;/b&gt;" in svg and "<b>" not in svg and "slow &amp; good" in svg
    assert svg.count('class="method"') == 2 and svg.count("<rect x=") == 2  # the frame + one dataset cell
    assert "(log scale)" in svg and tradeoff_svg([]) is None
    assert "(log scale)" not in (
        tradeoff_svg([Point("a", "all", 1.0, 5.0), Point("b", "all", 3.0, 9.0)]) or ""
    )


def test_a_run_the_report_cannot_label_is_named_not_a_500(tmp_path: Path) -> None:
    # Given a database holding a finished run of a method the report does not know
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    upgrade(url)
    engine = get_engine(url)
    with Session(engine) as session:
        session.add(Conversation(id="c1", committee="c", method="mystery", n_turns=1, run="odd"))
        session.add(Turn(conversation_id="c1", turn_index=0, question="q?", gold=["a"]))
        session.add(TurnResult(conversation_id="c1", turn_index=0, answer="a", status="ok", method="mystery"))
        session.commit()
    odd: Any = type("Client", (), {"store": Store(engine)})()

    view = runs_view(odd, tmp_path / "absent")

    assert view["report"] is None and "mystery" in view["report_problem"]
    assert [r["run"] for r in view["runs"]] == ["odd"]


QUESTIONS = ["What do I soak the beans in?", "For how long?"]
ANSWERS = {"r1": ["Cold water.", "Overnight."], "r2": ["Salted water.", "Eight hours or so."]}


def _passage_runs(tmp_path: Path) -> Any:
    """A database with runs r1 and r2 over one DoQA-like conversation (a passage, a given exchange)."""
    url = f"sqlite:///{tmp_path / 'passage.db'}"
    upgrade(url)
    engine = get_engine(url)
    with Session(engine) as session:
        for run, said in ANSWERS.items():
            conversation_id = f"{run}-c"
            session.add(
                Conversation(
                    id=conversation_id,
                    committee="c",
                    method="peer",
                    n_turns=2,
                    run=run,
                    external_id="beans",
                    source="doqa",
                    passage="Soak dried beans overnight in cold water.",
                    history=[["Are beans healthy?", "Yes."]],
                )
            )
            for i, (question, answer) in enumerate(zip(QUESTIONS, said, strict=True)):
                session.add(
                    Turn(conversation_id=conversation_id, turn_index=i, question=question, gold=["x"])
                )
                session.add(
                    TurnResult(
                        conversation_id=conversation_id,
                        turn_index=i,
                        answer=answer,
                        status="ok",
                        method="peer",
                    )
                )
        session.commit()
    return engine


def test_a_judge_reads_the_passage_and_each_sides_own_conversation_so_far(tmp_path: Path) -> None:
    from workers.web_evaluate import judging_view

    # Given two runs over one passage-grounded conversation, each with its own earlier answers
    engine = _passage_runs(tmp_path)
    client: Any = type("Client", (), {"store": Store(engine)})()

    # When the judge draws until turn 2 comes (the draw is random between the two turns)
    view = next(
        v for v in (judging_view(client, ("r1", "r2"), "ann") for _ in range(50)) if v["item"]["number"] == 2
    )
    item = view["item"]

    # Then: the passage, the given history and each side's own first answer, then turn 2's answers as A and B
    a, b = ("r1", "r2") if item["draw"].first_is_a else ("r2", "r1")
    assert item["passage"] == "Soak dried beans overnight in cold water."
    assert item["before"] == [
        {"question": "Are beans healthy?", "a": "Yes.", "b": "Yes."},
        {"question": QUESTIONS[0], "a": ANSWERS[a][0], "b": ANSWERS[b][0]},
    ]
    assert item["question"] == QUESTIONS[1] and item["answers"] == {"A": ANSWERS[a][1], "B": ANSWERS[b][1]}
    html = Pages(ServerOptions()).templates.get_template("evaluate.html").render(csrf="t", **view)
    assert (
        "Soak dried beans overnight" in html
        and "Salted water." in html
        and "r1" not in html.split('id="item"')[1].split("<form")[0]
    )
