"""The web pages of ``peerblend serve``: in a real headless browser, and over plain HTTP.

Embedded default (in-process worker, SQLite) with the scripted story committee of
tests/screenshots.py: m2 is slow (each of its calls sleeps, so a turn takes over a
second), m3's server is down. The browser is Debian's chromium driven through
chromium-driver (tests/browser.sh installs both; those tests are skipped, saying
why, where that cannot be done). Filters, pages, keys and 404s are checked with
FastAPI's TestClient, on rows written straight to the database where no model work
is needed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from db import crud
from db.models import Conversation, Turn, TurnResultBase
from pipeline.service.client import BlendClient
from tests.screenshots import (
    PHONE_WIDTH,
    STORY,
    answered,
    ask_in_browser,
    browser_problem,
    chrome,
    desktop,
    free_port,
    overflow,
    phone,
    save_page,
    save_phone_page,
    serve_in_thread,
    wait_for,
)
from tests.screenshots import story_committee as _story_committee
from workers.serve import ServerOptions, create_api

ROOT = Path(__file__).resolve().parents[1]
COMMITTEE = _story_committee(delay_s=0.6, name="web")
KEY = "web-key-1"
# The smallest valid PNG (1x1, transparent): a stand-in for the report's plot.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@pytest.fixture
def client(embedded: Callable[..., BlendClient]) -> BlendClient:
    return embedded(COMMITTEE)


@pytest.fixture
def site(client: BlendClient) -> Iterator[str]:
    """The app served by uvicorn on a thread of this process; its base URL."""
    port = free_port()
    server = serve_in_thread(create_api(client, ServerOptions()), port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium; installed by tests/browser.sh first if it is missing."""
    if browser_problem() is not None and shutil.which("chromedriver") is None:
        install = subprocess.run(
            [str(ROOT / "tests" / "browser.sh")], capture_output=True, text=True, timeout=600, check=False
        )
        if install.returncode != 0:
            pytest.skip(f"chromium-driver could not be installed: {install.stderr.strip()[-300:]}")
    if (problem := browser_problem()) is not None:
        pytest.skip(problem)
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the browser tests save their screenshots (docs/screenshots is tests/screenshots.py's)."""
    return tmp_path / "screenshots"


def _by(selector: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, selector


def _wait(driver: Any, seconds: float) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, seconds, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )


def test_the_list_and_a_conversation_in_a_browser(
    client: BlendClient, site: str, browser: Any, shots: Path
) -> None:
    # Given a finished two-turn conversation of a run
    run = f"web-{uuid.uuid4().hex[:6]}"
    handle = client.submit(STORY, run=run)
    handle.wait(timeout=60)
    stored = client.fetch(handle.conversation_id)

    # When the list is opened, then it shows the conversation, finished
    browser.get(f"{site}/conversations")
    row = browser.find_element(*_by(f'tr.conversation[data-id="{handle.conversation_id}"]'))
    assert "Who wrote Dune?" in row.text and "finished" in row.text and run in row.text
    assert save_page(browser, shots / "conversations.png").stat().st_size > 0

    # When its link is followed, then each turn shows every candidate, every ballot and the answer
    row.find_element(*_by("a")).click()
    _wait(browser, 10).until(lambda d: d.find_elements(*_by("#turn-2")))
    for turn in stored.turns:
        assert turn.result is not None
        section = browser.find_element(*_by(f"#turn-{turn.turn_index + 1}"))
        cards = {
            e.get_attribute("data-member"): e.text for e in section.find_elements(*_by("article.candidate"))
        }
        assert set(cards) == {c["member"] for c in turn.candidates} == {"m0", "m1", "m2", "m3"}
        for candidate in turn.candidates:
            assert (candidate["error"] or candidate["text"]) in cards[candidate["member"]]
        ballots = {e.get_attribute("data-reviewer"): e for e in section.find_elements(*_by("tr.ballot"))}
        assert set(ballots) == {r["reviewer"] for r in turn.reviews}
        for review in turn.reviews:
            cells = ballots[review["reviewer"]].find_elements(*_by("td"))
            shown = cells[2].text  # "A m1, B m2, C m0": the members in the order this reviewer saw them
            positions = [shown.index(member) for member in review["shown_order"]]
            assert positions == sorted(positions) and len(positions) == 3
            assert review["status"] in cells[4].text
        assert section.find_element(*_by(".answer-text")).text == turn.result["answer"]
        chosen = section.find_element(*_by("article.candidate.chosen")).get_attribute("data-member")
        assert chosen == turn.result["chosen"]
    assert not browser.find_elements(*_by("#turn-0")), "turns are numbered from 1 for humans"
    assert "error" in browser.find_element(*_by('#turn-1 tr.ballot[data-reviewer="m3"]')).text
    assert save_page(browser, shots / "conversation.png").stat().st_size > 0

    # When the runs page is opened, then the run is listed with its counts
    browser.get(f"{site}/runs")
    assert run in browser.find_element(*_by("#runs")).text
    assert save_page(browser, shots / "runs.png").stat().st_size > 0


def test_a_running_conversation_page_updates_itself(
    client: BlendClient, site: str, browser: Any, shots: Path
) -> None:
    # Given a conversation whose turns take over a second each (m2 is slow)
    handle = client.submit(STORY)

    # When its page is opened while it runs
    browser.get(f"{site}/conversations/{handle.conversation_id}")
    progress = browser.find_element(*_by("#progress"))
    assert int(progress.get_attribute("data-stored") or 0) < 2, "turn 2 was stored before the page loaded"
    assert "Waiting for the committee" in browser.find_element(*_by("#turn-2")).text
    browser.execute_script("window.peerblendTestMark = true;")

    # Then the page shows turn 2's answer once it is stored, without reloading itself
    _wait(browser, 30).until(lambda d: d.find_elements(*_by("#turn-2 .answer-text")))
    assert browser.execute_script("return window.peerblendTestMark === true;"), "the page reloaded"
    outcome = client.wait_turn(handle.conversation_id, 1, timeout=10)
    assert browser.find_element(*_by("#turn-2 .answer-text")).text == outcome.answer
    assert "finished" in browser.find_element(*_by("#progress")).text
    save_page(browser, shots / "conversation-live.png")


def _stub(
    client: BlendClient, run: str, *, policy: str = "full", stored: bool, minutes: int, committee: str = "web"
) -> str:
    """A one-turn conversation written straight to the database (nothing sent); its id."""
    conversation_id = uuid.uuid4().hex
    created = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    row = Conversation(
        id=conversation_id,
        committee=committee,
        method="peer",
        policy=policy,
        run=run,
        n_turns=1,
        created_at=created,
    )
    turn = Turn(conversation_id=conversation_id, turn_index=0, question=f"question of {run} {minutes}?")
    with Session(client.store.engine, expire_on_commit=False) as session:
        crud.create_conversation(session=session, conversation=row, turns=[turn])
        if stored:
            result = TurnResultBase(
                conversation_id=conversation_id, turn_index=0, answer="an answer", status="ok", method="peer"
            )
            crud.save_turn(session=session, result=result, candidates=[], reviews=[])
    return conversation_id


def _listed(http: TestClient, query: str) -> list[str]:
    response = http.get(f"/conversations?{query}")
    assert response.status_code == 200, response.text
    return re.findall(r'data-id="([0-9a-f]+)"', response.text)


def test_the_list_filters_and_pages(client: BlendClient) -> None:
    # Given three conversations of one run: a (p1, finished), b (running), c (finished), c newest
    run = f"filters-{uuid.uuid4().hex[:6]}"
    a = _stub(client, run, policy="p1", stored=True, minutes=0)
    b = _stub(client, run, stored=False, minutes=1)
    c = _stub(client, run, stored=True, minutes=2, committee="other")
    http = TestClient(create_api(client, ServerOptions()))

    assert _listed(http, f"run={run}") == [c, b, a]
    assert _listed(http, f"run={run}&status=running") == [b]
    assert _listed(http, f"run={run}&status=finished") == [c, a]
    assert _listed(http, f"run={run}&policy=p1") == [a]
    assert _listed(http, f"run={run}&committee=other") == [c]
    assert _listed(http, f"run={run}&method=pairwise") == []
    assert _listed(http, f"run={run}&status=&policy=&committee=") == [c, b, a]  # blank: any
    first = http.get(f"/conversations?run={run}&per_page=2").text
    assert re.findall(r'data-id="([0-9a-f]+)"', first) == [c, b] and "page 1 of 2" in first
    assert f"run={run}&amp;per_page=2&amp;page=2" in first
    assert _listed(http, f"run={run}&per_page=2&page=2") == [a]
    assert _listed(http, f"run={run}&per_page=2&page=3") == []
    assert b in re.findall(r'data-id="([0-9a-f]+)"', http.get("/").text)
    for bad in ("status=done", "page=0", "per_page=0", "per_page=1000"):
        assert http.get(f"/conversations?{bad}").status_code == 422, bad


def test_a_conversation_page_over_http(client: BlendClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a p2 conversation (turn 2 reuses turn 1's ranking) and a Flower URL
    handle = client.submit(STORY, policy="p2")
    handle.wait(timeout=60)
    http = TestClient(create_api(client, ServerOptions(flower_url="http://flower.example:5555/")))

    page = http.get(f"/conversations/{handle.conversation_id}")

    assert page.status_code == 200
    html = page.text
    assert 'id="turn-1"' in html and 'id="turn-2"' in html and 'id="turn-0"' not in html
    turn_2 = html[html.index('id="turn-2"') :]
    assert "not ranked (reused)" in turn_2 and "not ranked" not in html[: html.index('id="turn-2"')]
    assert "p2: even turn" in turn_2  # the policy's reason
    # the rule that decided, in a sentence
    assert "decided by" in turn_2 and "no review this turn (p2: even turn" in turn_2
    assert f"http://flower.example:5555/task/peerblend-{handle.conversation_id}-turn-0-a1" in html
    assert "Frank Herbert" in html  # gold
    progress = http.get(f"/conversations/{handle.conversation_id}.json").json()
    assert progress == {"id": handle.conversation_id, "turns": 2, "stored": 2, "running": False}


def test_the_runs_page_shows_runs_and_the_report(
    client: BlendClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run of two conversations, one finished, and a report folder
    run = f"runs-{uuid.uuid4().hex[:6]}"
    _stub(client, run, stored=True, minutes=0)
    _stub(client, run, stored=False, minutes=1)
    (tmp_path / "results.md").write_text("# peerblend results\n\n| method | all |\n| --- | ---: |\n")
    (tmp_path / "tradeoff.png").write_bytes(PNG)
    http = TestClient(create_api(client, ServerOptions(report_dir=tmp_path)))

    html = http.get("/runs").text

    row = re.search(rf"<tr class=\"run\">.*?{run}.*?</tr>", html, flags=re.S)
    assert row is not None and ">2<" in row.group(0) and "1/2" in row.group(0)
    assert "# peerblend results" in html and 'src="/runs/report/tradeoff.png"' in html
    plot = http.get("/runs/report/tradeoff.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content == PNG
    absent = ServerOptions(report_dir=tmp_path / "absent")
    assert "No report in" in TestClient(create_api(client, absent)).get("/runs").text


def test_unknown_things_are_404(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions()))
    page = http.get("/conversations/no-such-id")
    assert page.status_code == 404 and "no-such-id" in page.text
    assert http.get("/conversations/no-such-id.json").status_code == 404
    assert http.get("/runs/report/absent.png").status_code == 404
    assert http.get("/static/absent.css").status_code == 404
    assert http.get("/static/..%2Fweb.py").status_code == 404
    assert http.get("/static/style.css").status_code == 200


def test_api_keys_guard_the_pages(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions(api_keys=frozenset({KEY}))))
    conversation_id = _stub(client, f"keys-{uuid.uuid4().hex[:6]}", stored=True, minutes=0)

    # No key, or a wrong one: 401 (a key form for pages, JSON for the progress record)
    denied = http.get("/conversations")
    assert denied.status_code == 401 and 'name="key"' in denied.text
    assert http.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    progress = http.get(f"/conversations/{conversation_id}.json")
    assert progress.status_code == 401 and "error" in progress.json()
    assert http.get("/static/style.css").status_code == 200  # no data in the style sheet

    # A bearer key reads; so does ?key=, which leaves a cookie for the next pages
    assert http.get("/conversations", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    opened = http.get(f"/conversations/{conversation_id}?key={KEY}")
    assert opened.status_code == 200 and "httponly" in opened.headers["set-cookie"].lower()
    assert http.get(f"/conversations/{conversation_id}.json").status_code == 200  # by the cookie
    assert http.get("/runs").status_code == 200
    assert http.post("/conversations").status_code == 405  # the list takes no posts

    # A chat wants the key too, and the form's token with it; so do the stream and the list's record
    fresh = TestClient(create_api(client, ServerOptions(api_keys=frozenset({KEY}))))
    assert fresh.post("/chat", data={"question": "Who?"}).status_code == 401
    assert fresh.get(f"/conversations/{conversation_id}/turns/0/events").status_code == 401
    assert fresh.get("/conversations.json").status_code == 401
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert fresh.post("/chat", data={"question": "Who?"}, headers=bearer).status_code == 403
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', fresh.get("/", headers=bearer).text)
    assert token is not None and token.group(1) != _token(TestClient(create_api(client, ServerOptions())))


def test_the_api_takes_its_key_only_as_a_bearer_token(client: BlendClient) -> None:
    # Given a server with a key, and a browser that opened a page with it (the pages' cookie)
    http = TestClient(create_api(client, ServerOptions(api_keys=frozenset({KEY}))))
    assert http.get(f"/conversations?key={KEY}").status_code == 200

    # Then the API still wants the bearer token: the cookie and ?key= are the pages' ways only
    refused = http.get(f"/v1/models?key={KEY}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_a_post_without_a_key_is_answered_as_its_accept_header_asks(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions(api_keys=frozenset({KEY}))))

    scripted = http.post("/chat", data={"question": "Who?"}, headers={"Accept": "application/json"})
    typed = http.post("/chat", data={"question": "Who?"})

    assert scripted.status_code == 401 and "API key" in scripted.json()["error"]
    assert typed.status_code == 401 and 'name="key"' in typed.text


def _token(http: TestClient, path: str = "/") -> str:
    """The form token a page was rendered with (what a browser posts back)."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get(path).text)
    assert found is not None, f"no form on {path}"
    return found.group(1)


def _events(http: TestClient, url: str) -> list[tuple[str, Any]]:
    """(kind, data) of each event of a stream, read to its end; comments as ("comment", text)."""
    seen: list[tuple[str, Any]] = []
    kind = "message"
    with http.stream("GET", url) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith(":"):
                seen.append(("comment", line[1:].strip()))
            elif line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line.removeprefix("data: "))))
                kind = "message"
    return seen


def _total(client: BlendClient) -> int:
    with Session(client.store.engine) as session:
        return crud.list_conversations(session=session, offset=0, limit=1)[1]


def test_a_chat_over_http_streams_its_stages(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions()))
    token = _token(http)

    # When a chat is started from the list page's form (p1, a system prompt and a passage)
    form = {"question": "Who wrote Dune?", "model": "web:p1", "system": "Be brief.", "passage": "Dune..."}
    started = http.post("/chat", data={**form, "csrf": token}, follow_redirects=False)

    # Then it is a live conversation like the API's, and the page is where the answer comes
    assert started.status_code == 303, started.text
    conversation_id = re.fullmatch(r"/conversations/([0-9a-f]+)#turn-1", started.headers["location"])[1]
    state = client.store.state(conversation_id)
    assert state is not None and state.run.live and state.run.policy == "p1"
    assert (state.system, state.passage, state.questions) == ("Be brief.", "Dune...", ("Who wrote Dune?",))

    # And its events come as the tasks finish: every candidate before any ballot, the decision last
    events = _events(http, f"/conversations/{conversation_id}/turns/0/events")
    kinds = [kind for kind, _ in events if kind != "comment"]
    assert kinds[-1] == "decision" and kinds.count("decision") == 1
    assert kinds.count("candidate") == 4 and "ballot" in kinds
    assert max(i for i, k in enumerate(kinds) if k == "candidate") < kinds.index("ballot")
    decision = events[-1][1]
    outcome = client.wait_turn(conversation_id, 0, timeout=30)
    assert (decision["answer"], decision["chosen"]) == (outcome.answer, outcome.chosen)
    assert decision["decided_by"] and decision["explanation"][0].startswith("Decided by:")

    # When a follow-up is asked by the page's script, then it is turn 1 of the same conversation
    ask = f"/conversations/{conversation_id}/turns"
    json_ = {"Accept": "application/json"}
    sent = http.post(ask, data={"question": "When was it published?", "csrf": token}, headers=json_)
    assert sent.status_code == 202 and sent.json()["turn"] == 1, sent.text
    # and a question asked while it runs is refused, its text kept in the box
    again = http.post(ask, data={"question": "And the sequel?", "csrf": token})
    assert again.status_code == 409 and "still running" in again.text
    assert re.search(r"<textarea[^>]*>And the sequel\?</textarea>", again.text)
    refused = http.post(ask, data={"question": "And the sequel?", "csrf": token}, headers=json_)
    assert refused.status_code == 409 and "still running" in refused.json()["error"]
    client.wait_turn(conversation_id, 1, timeout=30)
    stored = client.fetch(conversation_id)
    assert [t.question for t in stored.turns] == ["Who wrote Dune?", "When was it published?"]
    fragment = http.get(f"/conversations/{conversation_id}/turns/1")
    assert 'id="turn-2"' in fragment.text and "Why this answer" in fragment.text


def test_refused_chat_forms_store_nothing(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions()))
    token, before = _token(http), _total(client)

    empty = http.post("/chat", data={"question": "  ", "csrf": token})
    unknown = http.post("/chat", data={"question": "Who?", "model": "web:p9", "csrf": token})
    forged = http.post("/chat", data={"question": "Who?", "csrf": "0" * 40})
    elsewhere = http.post(
        "/chat", data={"question": "Who?", "csrf": token}, headers={"Origin": "http://evil.example"}
    )

    assert empty.status_code == 400 and "the question is empty" in empty.text
    assert unknown.status_code == 400 and "web:p1" in unknown.text  # names the variants to choose from
    assert re.search(r"<textarea[^>]*>Who\?</textarea>", unknown.text), "what was typed is kept"
    assert forged.status_code == 403 and "expired" in forged.text
    assert elsewhere.status_code == 403 and "another site" in elsewhere.text
    assert _total(client) == before
    dead = _stub(client, f"dead-{uuid.uuid4().hex[:6]}", stored=True, minutes=0)
    not_live = http.post(f"/conversations/{dead}/turns", data={"question": "Hi?", "csrf": token})
    assert not_live.status_code == 400 and "no live conversation" in not_live.text


def test_an_event_stream_is_bounded_and_beats(client: BlendClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a turn that never finishes (written straight to the database, nothing sent)
    import workers.web_stream as web_stream

    monkeypatch.setattr(web_stream, "HEARTBEAT_S", 0.0)
    monkeypatch.setattr(web_stream, "POLL_S", 0.05)
    conversation_id = _stub(client, f"stuck-{uuid.uuid4().hex[:6]}", stored=False, minutes=0)
    http = TestClient(create_api(client, ServerOptions(turn_timeout_s=0.3)))

    events = _events(http, f"/conversations/{conversation_id}/turns/0/events")

    # Then it sends heartbeats while it waits, and ends with "timeout" at the server's bound
    assert ("comment", "heartbeat") in events
    assert events[-1][0] == "timeout" and not [k for k, _ in events if k == "decision"]
    assert http.get(f"/conversations/{conversation_id}/turns/5/events").status_code == 404
    assert http.get("/conversations/no-such-id/turns/0/events").status_code == 404


def test_the_list_record_changes_with_the_list(client: BlendClient) -> None:
    http = TestClient(create_api(client, ServerOptions()))
    run = f"poll-{uuid.uuid4().hex[:6]}"
    first = http.get(f"/conversations.json?run={run}").json()
    assert first["total"] == 0 and first["rows"].strip() == ""

    conversation_id = _stub(client, run, stored=False, minutes=0)

    second = http.get(f"/conversations.json?run={run}").json()
    assert second["total"] == 1 and second["signature"] != first["signature"]
    assert f'data-id="{conversation_id}"' in second["rows"]


def _stages(browser: Any, number: int) -> list[str]:
    """What turn ``number``'s section showed, in the order its events came (live.js records it)."""
    return (browser.find_element(*_by(f"#turn-{number}")).get_attribute("data-stages") or "").split(",")


def test_a_chat_in_a_browser(client: BlendClient, site: str, browser: Any, shots: Path) -> None:
    # Given the front page; when a person types a question and presses Ask
    browser.get(f"{site}/")
    ask_in_browser(browser, "Who wrote Dune?", box="#chat textarea[name=question]")

    # Then the conversation's page follows the turn: candidates first, then the decision and answer
    wait_for(browser, lambda d: "/conversations/" in d.current_url)
    conversation_id = browser.current_url.split("/conversations/")[1].split("#")[0]
    browser.execute_script("window.peerblendTestMark = true;")
    wait_for(browser, answered(1))
    stages = _stages(browser, 1)
    assert "candidate" in stages and stages[-1] == "decision", stages
    assert max(i for i, s in enumerate(stages) if s == "candidate") < stages.index("decision")
    first = client.wait_turn(conversation_id, 0, timeout=30)
    assert browser.find_element(*_by("#turn-1 .answer-text")).text == first.answer
    assert browser.find_elements(*_by("#turn-1 .explanation li")), "the page says why"

    # When a follow-up is asked in the same page
    ask_in_browser(browser, "When was it first published?")

    # Then it is turn 2 of the same conversation, answered without a reload, the box emptied
    wait_for(browser, answered(2))
    assert browser.execute_script("return window.peerblendTestMark === true;"), "the page reloaded"
    assert _stages(browser, 2)[0] == "candidate" and _stages(browser, 2)[-1] == "decision"
    stored = client.fetch(conversation_id)
    assert [t.question for t in stored.turns] == ["Who wrote Dune?", "When was it first published?"]
    assert stored.turns[1].result is not None
    assert browser.find_element(*_by("#turn-2 .answer-text")).text == stored.turns[1].result["answer"]
    assert browser.find_element(*_by("#ask textarea")).get_attribute("value") == ""
    wait_for(browser, lambda d: "2 of 2 turns stored" in d.find_element(*_by("#progress")).text)
    save_page(browser, shots / "chat.png")


def test_the_list_shows_new_conversations_by_itself(client: BlendClient, site: str, browser: Any) -> None:
    # Given the list open in a browser
    browser.get(f"{site}/conversations")
    browser.execute_script("window.peerblendTestMark = true;")

    # When a conversation is started through the client API (as the chat endpoint does)
    chat = client.start()
    chat.send("Who wrote Dune?")

    # Then its row appears, then its turn shows as stored, with no reload of the page
    row = f'tr.conversation[data-id="{chat.conversation_id}"]'
    wait_for(browser, lambda d: d.find_elements(*_by(row)))
    chat.wait(0, timeout=30)
    wait_for(browser, lambda d: "1/1" in d.find_element(*_by(row)).text)
    assert "finished" in browser.find_element(*_by(row)).text
    assert browser.execute_script("return window.peerblendTestMark === true;"), "the page reloaded"


def test_the_pages_fit_a_phone(client: BlendClient, site: str, browser: Any, shots: Path) -> None:
    # Given a finished conversation with failed members, long errors and ballots
    handle = client.submit(STORY, run=f"phone-{uuid.uuid4().hex[:6]}")
    handle.wait(timeout=60)
    paths = ["/", f"/conversations/{handle.conversation_id}", "/runs"]
    try:
        for width in (1280, PHONE_WIDTH):
            if width == PHONE_WIDTH:
                phone(browser)
            for path in paths:
                browser.get(site + path)
                wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete")
                document, window = overflow(browser)
                # Then no page is wider than the window: nothing to scroll sideways
                assert document <= window, f"{path} at {width} px: the page is {document} px wide"
        # and on a phone the tables are cards: no header row
        browser.get(site + paths[1])
        assert browser.find_elements(*_by("table.ballots tr.ballot"))
        assert not browser.find_element(*_by("table.ballots thead")).is_displayed()
        save_phone_page(browser, shots / "phone.png")
    finally:
        desktop(browser)


def test_an_event_stream_ends_when_its_reader_leaves(client: BlendClient) -> None:
    import asyncio

    from workers.web_stream import turn_stream

    class Gone:
        """A request whose client has disconnected (what starlette's Request reports then)."""

        headers: dict[str, str] = {}
        query_params: dict[str, str] = {}

        async def is_disconnected(self) -> bool:
            return True

    # Given a turn that would never finish
    conversation_id = _stub(client, f"gone-{uuid.uuid4().hex[:6]}", stored=False, minutes=0)

    async def read() -> list[str]:
        stream = turn_stream(Gone(), client, conversation_id, 0, limit_s=600)  # type: ignore[arg-type]
        return [chunk async for chunk in stream]

    # Then the stream stops at once instead of polling for ten minutes
    assert asyncio.run(asyncio.wait_for(read(), timeout=30)) == ["retry: 2000\n\n"]
