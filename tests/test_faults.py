"""Faults: nothing lost, nothing run twice, the truth told.

Real ``celery worker`` processes (prefork) on Redis and PostgreSQL, scripted committees
whose every reviewer prefers m0 > m1 > m2 (so p1's exclusions are known in advance:
everyone for the first half of a conversation, then m2 sits out), and one fault per
test. After each, every turn is stored exactly once (one ``turn_result`` row, one
``candidate`` row per generator of its decision), with the decisions it would have had
without the fault. Figures per scenario are printed (``-s``) and summed up at the end.

Redis is a private redis-server (test 3 kills and restarts one of its own); PostgreSQL
is the session's fresh database on the shared server, or (test 4) a private cluster
that the test stops. The shared Redis and PostgreSQL are never stopped.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from pipeline.plan import RunConfig
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.service.canvas import AGGREGATE, final_task_id
from pipeline.store_keys import conversation_key
from tests.faults_support import (
    BROKER_ERRORS,
    FIGURES,
    Deployment,
    PostgresCluster,
    RedisServer,
    Worker,
    p1_decisions,
    ranked_committee,
    record,
    run_stored_count,
    stop_process,
    summary,
    tally,
    wait_all_stored,
    wait_for,
    write_dataset,
)
from tests.test_serve import Server, embedded_env

pytestmark = pytest.mark.services


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    started = time.monotonic()
    FIGURES.clear()
    yield
    print(summary())
    print(f"[faults] module wall time {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A second private Redis, for the test that kills it."""
    server = RedisServer(tmp_path_factory.mktemp("redis-killed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster, for the test that stops it; removed at the end."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def deploy(postgres_url: str, redis: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Build a deployment of a ``ranked_committee`` (its own queues); workers stopped at the end."""
    made: list[Deployment] = []

    def make(
        *,
        options: dict[str, dict[str, Any]] | None = None,
        timeout_s: dict[str, float] | None = None,
        server: RedisServer | None = None,
        database: str | None = None,
    ) -> Deployment:
        tag = uuid.uuid4().hex[:8]
        committee = ranked_committee(f"faults-{tag}", f"f{tag}.", options=options, timeout_s=timeout_s)
        server = server or redis
        home = tmp_path / tag
        home.mkdir()
        deployment = Deployment(
            home,
            committee,
            tag=tag,
            broker=server.url(0),
            backend=server.url(1),
            database=database or postgres_url,
        )
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


def _running(d: Deployment, worker: Worker, name: str, turn: int) -> dict[str, Any] | None:
    """A task named ``name`` (e.g. "generate[m0]") of turn ``turn`` that a pool child runs now."""
    for task in d.active(worker):
        if task["name"] == name and task["kwargs"]["turn"]["turn_index"] == turn and task["worker_pid"]:
            return task
    return None


def _questions(tag: str, conversation: int, turns: int) -> list[str]:
    return [f"{tag} c{conversation} q{t}?" for t in range(turns)]


def _by_turn(counts_decisions: dict[tuple[str, int], Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for (conversation, _turn), decision in sorted(counts_decisions.items()):
        out.setdefault(conversation, []).append(decision)
    return out


# 1 ---------------------------------------------------------------------------------------------


def test_a_pool_child_killed_mid_task_has_its_task_delivered_again(deploy):
    # Given: two p1 conversations of four turns; m0 takes 1 s per call
    d = deploy(options={"m0": {"delay_s": 1.0}})
    worker = d.start_worker()
    handles = [d.client.submit(_questions(d.tag, c, 4), policy="p1") for c in range(2)]

    # When: the pool child running m0's answer to a second turn is killed with SIGKILL
    task = wait_for("m0 answering turn 1", lambda: _running(d, worker, "generate[m0]", 1), timeout=60)
    os.kill(task["worker_pid"], signal.SIGKILL)
    killed_at = time.time()

    # Then: the task is delivered again and every turn is stored once, as without the fault
    conversations = {h.conversation_id: 4 for h in handles}
    counts = wait_all_stored(d.engine, conversations, timeout=90)
    record("1 pool child SIGKILL", counts, fault_end=killed_at)
    assert counts.problems == []
    assert all(ds == p1_decisions(d.committee, 4) for ds in _by_turn(counts.decisions).values())
    log = worker.text()
    assert "WorkerLostError" in log
    assert log.count(f"[{task['id']}] received") == 2  # delivered again after the child died
    assert log.count(f"[{task['id']}] succeeded") == 1


# 2 ---------------------------------------------------------------------------------------------


def test_a_killed_worker_is_recovered_by_peerblend_recover(deploy, own_database):
    # Given: two p1 conversations of four turns on one worker; m0 takes 1 s per call (in a
    # database of their own: `recover` resends every stalled conversation it holds)
    d = deploy(options={"m0": {"delay_s": 1.0}}, database=own_database)
    first = d.start_worker()
    handles = [d.client.submit(_questions(d.tag, c, 4), policy="p1") for c in range(2)]
    conversations = {h.conversation_id: 4 for h in handles}

    # When: the worker's main process and its pool children are killed while m0 answers a
    # second turn (its messages stay unacknowledged in Redis for the visibility timeout),
    task = wait_for("m0 answering turn 1", lambda: _running(d, first, "generate[m0]", 1), timeout=60)
    stalled = task["kwargs"]["turn"]["conversation_id"]
    first.kill_all()
    # a fresh worker starts, and `peerblend recover` resends what stalled
    d.start_worker()
    back_at = time.time()
    recovered = d.peerblend("recover", "--older-than", "1")

    # Then: recover names the stalled turn, and everything finishes, stored once
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"resent turn 1 of {stalled} (attempt 2)" in recovered.stdout, recovered.stdout
    named = re.findall(r"resent turn \d+ of (\w+)", recovered.stdout)
    assert set(named) <= set(conversations)
    assert f"{len(named)} stalled conversation(s) resent" in recovered.stdout
    counts = wait_all_stored(d.engine, conversations, timeout=90)
    record("2 worker SIGKILL + recover", counts, fault_end=back_at, note=f"recover resent {len(named)}")
    assert counts.problems == []
    assert all(ds == p1_decisions(d.committee, 4) for ds in _by_turn(counts.decisions).values())


def _waiting_on_policy_lock(d: Deployment) -> bool:
    query = text(
        "select count(*) from pg_stat_activity where datname = current_database() "
        "and wait_event_type = 'Lock' and query ilike 'update policy_state%'"
    )
    with d.engine.connect() as connection:
        return bool(connection.execute(query).scalar_one())


def test_a_worker_killed_between_storing_a_turn_and_its_policy_update_is_recovered(deploy):
    # Given: a p1 conversation of four turns (turn 1's fold makes m2 sit out turns 2 and 3)
    d = deploy(options={"m0": {"delay_s": 0.5}})
    first = d.start_worker()
    handle = d.client.submit(_questions(d.tag, 0, 4), policy="p1")
    conversation = handle.conversation_id
    key = conversation_key(d.committee.name, "p1", conversation)

    def applied() -> int:
        return int((d.client.policy_store.get(key) or {}).get("applied_turns", 0))

    wait_for("turn 0 folded into the policy state", lambda: applied() == 1, timeout=30)
    # When: the worker dies after storing turn 1, before folding it into the policy state
    # (the test holds the state's row lock, so the fold waits right there)
    with d.engine.connect() as lock:
        lock.execute(text("select 1 from policy_state where key = :key for update"), {"key": key})
        wait_for(
            "turn 1 stored, its policy update waiting",
            lambda: (
                not isinstance(d.client.store.progress(conversation, 1), int) and _waiting_on_policy_lock(d)
            ),
            timeout=30,
        )
        first.kill_all()
        lock.rollback()
    wait_for("the dead worker's transaction ended", lambda: not _waiting_on_policy_lock(d), timeout=30)
    # (the fold of turn 1 is really lost: the state is a turn behind the stored turns)
    if applied() != 1:
        pytest.fail(f"the fold of turn 1 was not lost: applied_turns = {applied()}")
    d.start_worker()
    back_at = time.time()
    recovered = d.peerblend("recover", "--older-than", "1")
    if f"resent turn 2 of {conversation}" not in recovered.stdout:
        pytest.fail(f"recover did not resend turn 2:\n{recovered.stdout}{recovered.stderr}")
    counts = wait_all_stored(d.engine, {conversation: 4}, timeout=60)
    decisions = _by_turn(counts.decisions)[conversation]
    note = "excluded per turn: " + ", ".join(str(list(excluded)) for _, _, excluded in decisions)
    record("2b worker SIGKILL before the policy fold", counts, fault_end=back_at, note=note)
    if counts.problems:
        pytest.fail(f"not stored exactly once: {counts.problems}")

    # Then: the conversation ends with the decisions it would have had (m2 out of turns 2, 3)
    assert decisions == p1_decisions(d.committee, 4)


# 3 ---------------------------------------------------------------------------------------------


def _worker_back(d: Deployment, worker: Worker) -> str:
    """Wait until a worker whose Redis restarted works again: "reconnected", or "exited" and
    started anew. (A worker that loses its broker with tasks in flight reconnects, or sometimes
    exits with "Unrecoverable error" from kombu 5.7's redis transport: then it is started again,
    as compose's restart: unless-stopped would.)"""
    fate: str = wait_for(
        "the worker reconnects or exits",
        lambda: "exited" if worker.process.poll() is not None else d.answers(worker) and "reconnected",
        timeout=60,
        tolerate=BROKER_ERRORS,
    )
    if fate == "exited":
        d.start_worker()
    return fate


def test_redis_restarted_mid_replay_then_the_same_replay_finishes_it(own_redis, deploy):
    # Given: a committee on a Redis of the test's own, and a reference p1 run without the fault
    d = deploy(options={"m0": {"delay_s": 0.3}}, server=own_redis)
    worker = d.start_worker()
    dataset = write_dataset(d.home / "data.jsonl", d.tag, conversations=3, turns=4)
    replay = ("replay", str(dataset), "--policy", "p1", "--concurrency", "2")
    reference = d.peerblend(*replay, "--run", f"ref-{d.tag}")
    assert reference.returncode == 0, reference.stdout + reference.stderr

    # When: Redis is killed (everything in it lost) and restarted in the middle of the same replay,
    run = f"fault-{d.tag}"
    interrupted = d.start_peerblend(*replay, "--run", run)
    wait_for("three turns stored", lambda: run_stored_count(d.engine, run) >= 3, timeout=60)
    own_redis.kill()
    stored_before = run_stored_count(d.engine, run)
    time.sleep(1.0)  # the outage
    own_redis.start()
    back_at = time.time()
    fate = _worker_back(d, worker)
    if interrupted.poll() is None:  # the stalled replay is stopped (Ctrl-C) ...
        interrupted.send_signal(signal.SIGINT)
    interrupted.communicate(timeout=60)
    # ... and run again
    rerun = d.peerblend(*replay, "--run", run)

    # Then: every turn is stored once, with the reference run's decisions
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "0 failed" in rerun.stdout and "12/12 turns stored" in rerun.stdout, rerun.stdout
    faulted, reference_ids = d.conversations(run), d.conversations(f"ref-{d.tag}")
    counts = tally(d.engine, {c: n for c, (_, n) in faulted.items()})
    note = f"{stored_before}/12 stored before; worker {fate}"
    record("3 Redis restart mid-replay", counts, fault_end=back_at, note=note)
    assert counts.expected == 12 and counts.problems == []
    assert stored_before < 12, "the replay had finished before Redis went down"
    reference_counts = tally(d.engine, {c: n for c, (_, n) in reference_ids.items()})
    expected = {reference_ids[c][0]: ds for c, ds in _by_turn(reference_counts.decisions).items()}
    assert {faulted[c][0]: ds for c, ds in _by_turn(counts.decisions).items()} == expected
    assert all(ds == p1_decisions(d.committee, 4) for ds in expected.values())


# 4 ---------------------------------------------------------------------------------------------


def test_postgres_stopped_for_30_s_mid_replay(own_postgres, deploy):
    # Given: a p1 replay of three conversations, all in flight, on a PostgreSQL of the test's own
    d = deploy(options={"m0": {"delay_s": 0.3}}, database=own_postgres.create_database("faults"))
    worker = d.start_worker()
    dataset = write_dataset(d.home / "data.jsonl", d.tag, conversations=3, turns=4)
    run = f"pg-{d.tag}"
    replay = ("replay", str(dataset), "--run", run, "--policy", "p1", "--concurrency", "3")
    first = d.start_peerblend(*replay)
    wait_for("three conversations submitted", lambda: len(d.conversations(run)) == 3, timeout=60)
    conversations = {c: n for c, (_, n) in d.conversations(run).items()}
    wait_for("two turns stored", lambda: run_stored_count(d.engine, run) >= 2, timeout=60)

    # When: PostgreSQL stops for 30 s while turns are in flight
    stored_before = run_stored_count(d.engine, run)
    own_postgres.stop("fast")
    stopped_at = time.monotonic()
    while time.monotonic() - stopped_at < 30:  # the outage; the workers go on meanwhile
        time.sleep(0.5)
    own_postgres.start()
    back_at = time.time()

    # Then: the finished turns' writes were retried, not lost: every turn is stored once
    counts = wait_all_stored(d.engine, conversations, timeout=120, tolerate=(OperationalError,))
    retries = worker.text().count("database unreachable")
    first.communicate(timeout=30)  # it may have died of the unreachable database while it polled
    again = d.peerblend(*replay) if first.returncode != 0 else None
    replay_fate = "replay finished" if again is None else f"replay exited {first.returncode}, rerun"
    note = f"{stored_before}/12 stored before; {retries} write retries; {replay_fate}"
    record("4 PostgreSQL down 30 s", counts, fault_end=back_at, note=note)
    assert stored_before < 12, "the replay had finished before PostgreSQL stopped"
    assert counts.problems == []
    assert all(ds == p1_decisions(d.committee, 4) for ds in _by_turn(counts.decisions).values())
    assert retries > 0
    # and the replay, run again if it died, finds the run done
    if again is not None:
        assert again.returncode == 0, again.stdout + again.stderr
        assert "3 already done" in again.stdout, again.stdout


# 5 ---------------------------------------------------------------------------------------------


def test_a_hanging_member_times_out_and_the_turn_goes_on(deploy):
    # Given: m2 hangs for 60 s on every call, with a 2 s timeout
    d = deploy(options={"m2": {"delay_s": 60}}, timeout_s={"m2": 2})
    d.start_worker()

    # When: a two-turn conversation is blended
    sent_at = time.time()
    handle = d.client.submit(_questions(d.tag, 0, 2))
    outcomes = handle.wait(timeout=45)

    # Then: each turn completes without m2: its answer and review recorded as timeouts
    counts = tally(d.engine, {handle.conversation_id: 2})
    took = ", ".join(f"{o.timings['total_s']:.1f}" for o in outcomes)
    note = f"recovery counted from submit; turns took {took} s"
    record("5 hanging member (60 s, timeout 2 s)", counts, fault_end=sent_at, note=note)
    assert counts.problems == []
    assert [o.chosen for o in outcomes] == ["m0", "m0"]
    for turn in d.client.fetch(handle.conversation_id).turns:
        candidates = {c["member"]: c for c in turn.candidates}
        assert candidates["m2"]["error"].startswith("timeout:")
        assert all(candidates[m]["error"] is None and candidates[m]["text"] for m in ("m0", "m1"))
        reviews = {r["reviewer"]: r for r in turn.reviews}
        assert reviews["m2"]["status"] == "timeout"
        assert all(reviews[m]["status"] == "scored" for m in ("m0", "m1"))
        assert turn.result["timings"]["total_s"] < 60  # it did not wait for the hanging call


# 6 ---------------------------------------------------------------------------------------------


def _deliver_aggregate_again(d: Deployment, conversation: str) -> str:
    """Send turn 0's aggregate task again, as Redis would redeliver it: same id, same inputs
    (rebuilt from the stored candidates and reviews), same decision."""
    stored = d.client.fetch(conversation)
    turn = stored.turns[0]
    candidates = tuple(
        CandidateRecord(c["member"], c["text"], c["error"], c["seconds"]) for c in turn.candidates
    )
    reviews = [
        ReviewRecord(
            r["reviewer"],
            r["method"],
            r["status"],
            tuple(r["ranking"]),
            tuple(r["shown_order"]),
            r["seed"],
            r["raw"],
            r["error"],
            r["seconds"],
            candidates=candidates,
        ).to_json()
        for r in turn.reviews
    ]
    context = TurnContext(conversation, 0, turn.question, n_turns=len(stored.turns), enqueued_at=time.time())
    run = RunConfig(method=stored.method, policy=stored.policy, top_k=stored.top_k)  # type: ignore[arg-type]
    task_id = final_task_id(conversation, 0, 1)
    d.app.send_task(
        AGGREGATE,
        args=[reviews],
        kwargs={
            "turn": context.to_json(),
            "run": run.to_json(),
            "decision": TurnRoles.from_json(turn.result["decision"]).to_json(),
        },
        task_id=task_id,
        shadow="aggregate",
    )
    return task_id


def test_a_redelivered_aggregate_sends_nothing_while_the_next_turn_runs(deploy):
    # Given: a p1 conversation of three turns (m2 sits out turn 2); m1 takes 1.5 s per call
    d = deploy(options={"m1": {"delay_s": 1.5}})
    worker = d.start_worker()
    questions = _questions(d.tag, 0, 3)
    handle = d.client.submit(questions, policy="p1")
    conversation = handle.conversation_id
    d.client.wait_turn(conversation, 0, timeout=30)

    # When: turn 0's aggregate is delivered again while turn 1 runs
    again_at = time.time()
    task_id = _deliver_aggregate_again(d, conversation)
    wait_for(
        "the second delivery ran", lambda: worker.text().count(f"[{task_id}] succeeded") == 2, timeout=30
    )
    assert isinstance(d.client.store.progress(conversation, 1), int), "turn 1 had finished: no overlap"

    # Then: it stored and sent nothing: one chain to the end, each turn generated once per member
    counts = wait_all_stored(d.engine, {conversation: 3}, timeout=60)
    record("6 aggregate delivered twice", counts, fault_end=again_at)
    assert counts.problems == []
    assert _by_turn(counts.decisions)[conversation] == p1_decisions(d.committee, 3)
    log = worker.text()
    answered = Counter(
        (member, text)
        for member, text in re.findall(
            r"Task generate\[(m\d)\]\[[^\]]+\] succeeded in [^:]+: .*?'text': '([^']*)'", log
        )
    )
    expected = Counter(
        (m, f"model{m[1]}: {q}") for t, q in enumerate(questions) for m in p1_decisions(d.committee, 3)[t][0]
    )
    assert answered == expected
    received = Counter(re.findall(r"Task generate\[m\d\]\[([^\]]+)\] received", log))
    assert sum(received.values()) == sum(expected.values()) and set(received.values()) == {1}
    aggregates = Counter(re.findall(r"Task aggregate\[(peerblend-[^\]]+)\] received", log))
    assert aggregates == {final_task_id(conversation, t, 1): 2 if t == 0 else 1 for t in range(3)}
    with d.engine.connect() as connection:
        attempts = connection.execute(
            text("select attempt from turn where conversation_id = :c order by turn_index"),
            {"c": conversation},
        ).scalars()
        assert list(attempts) == [1, 1, 1]


# 8 ---------------------------------------------------------------------------------------------
# The HTTP caller's side: a real `peerblend serve` process in front of the same deployment.


def _chat(
    server: Server, model: str, messages: list[str], *, key: str | None = None, timeout: float = 120
) -> httpx.Response:
    """POST a chat whose messages alternate user/assistant (what any OpenAI client sends)."""
    roles = ("user", "assistant")
    body = {
        "model": model,
        "messages": [{"role": roles[i % 2], "content": m} for i, m in enumerate(messages)],
    }
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{server.url}/chat/completions", json=body, headers=headers, timeout=timeout)


def _served(d: Deployment, **env: str) -> Server:
    return Server({**d.env, **env}, d.home)


def _turn_rows(d: Deployment, conversation_id: str) -> list[tuple[int, str]]:
    with d.engine.connect() as connection:
        query = text("select turn_index, question from turn where conversation_id = :c order by turn_index")
        return [tuple(row) for row in connection.execute(query, {"c": conversation_id})]  # type: ignore[misc]


def _asked(d: Deployment, question: str) -> bool:
    with d.engine.connect() as connection:
        query = text("select count(*) from turn where question = :q")
        return bool(connection.execute(query, {"q": question}).scalar())


def test_a_server_killed_during_a_follow_up_then_the_follow_up_resent_asks_nothing_twice(deploy):
    # Given: a conversation of one turn through a server, members that take 2 s
    d = deploy(options={f"m{i}": {"delay_s": 2.0} for i in range(3)})
    d.start_worker()
    server = _served(d)
    first, follow_up = f"{d.tag} Who wrote Dune?", f"{d.tag} When was it published?"
    opened = _chat(server, d.committee.name, [first])
    assert opened.status_code == 200, opened.text
    conversation = opened.json()["peerblend"]["conversation_id"]
    answer = opened.json()["choices"][0]["message"]["content"]

    # When: the server is killed while the follow-up runs, and the follow-up is sent again to a new one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_chat, server, d.committee.name, [first, answer, follow_up], timeout=30)
        wait_for("the follow-up is asked", lambda: _asked(d, follow_up), timeout=30)
        server.process.kill()
        server.process.wait()
    restarted = _served(d)
    try:
        resent = _chat(restarted, d.committee.name, [first, answer, follow_up])
        after = _chat(
            restarted,
            d.committee.name,
            [
                first,
                answer,
                follow_up,
                resent.json()["choices"][0]["message"]["content"],
                f"{d.tag} And its sequel?",
            ],
        )
    finally:
        stop_process(restarted.process)

    # Then: the resent follow-up got the turn asked before; the conversation goes on from there
    assert resent.status_code == 200, resent.text
    assert (resent.json()["peerblend"]["conversation_id"], resent.json()["peerblend"]["turn_index"]) == (
        conversation,
        1,
    )
    assert after.status_code == 200 and after.json()["peerblend"]["turn_index"] == 2
    assert _turn_rows(d, conversation) == [(0, first), (1, follow_up), (2, f"{d.tag} And its sequel?")]


def test_postgres_stopped_while_a_caller_waits_still_answers_it(own_postgres, deploy):
    # Given: a server on a PostgreSQL of the test's own, members that take 3 s
    d = deploy(
        options={f"m{i}": {"delay_s": 3.0} for i in range(3)}, database=own_postgres.create_database("serve")
    )
    d.start_worker()
    server = _served(d)
    question = f"{d.tag} Who wrote Dune?"
    try:
        # When: PostgreSQL stops for 8 s while the caller waits
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(_chat, server, d.committee.name, [question])
            wait_for(
                "the question is stored",
                lambda: _asked(d, question),
                timeout=30,
                tolerate=(OperationalError,),
            )
            time.sleep(0.5)  # the start message is sent just after the turn is stored
            own_postgres.stop()
            time.sleep(8.0)
            own_postgres.start()
            answered = waiting.result(timeout=120)
    finally:
        stop_process(server.process)

    # Then: the caller gets its answer (the turn was stored once the database was back), not a 503
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == f"model0: {question}"


def test_redis_restarted_while_a_caller_waits_is_a_prompt_503_naming_the_turn_which_a_retry_gets(
    own_redis, deploy
):
    # Given: a server on a Redis of the test's own, members that take 3 s
    d = deploy(options={f"m{i}": {"delay_s": 3.0} for i in range(3)}, server=own_redis)
    worker = d.start_worker()
    server = _served(d)
    question, key = f"{d.tag} Who wrote Dune?", f"key-{d.tag}"
    try:
        # When: Redis is killed (its queues lost) and restarted while the caller waits
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(_chat, server, d.committee.name, [question], key=key)
            wait_for("the question is asked", lambda: _asked(d, question), timeout=30)
            time.sleep(0.5)
            own_redis.kill()
            killed_at = time.monotonic()
            time.sleep(1.0)
            own_redis.start()
            refused = waiting.result(timeout=120)
            answered_after = time.monotonic() - killed_at
        # Then: 503 at once (not after the turn timeout), naming the turn, with Retry-After
        assert refused.status_code == 503, refused.text
        assert answered_after < 30
        error = refused.json()["error"]
        assert error["turn_index"] == 0 and "Retry-After" in refused.headers
        _worker_back(d, worker)
        # When: the caller retries; Then: it gets the turn the server sent again (asked once)
        retried = _chat(server, d.committee.name, [question], key=key)
    finally:
        stop_process(server.process)
    assert retried.status_code == 200, retried.text
    assert retried.json()["peerblend"]["conversation_id"] == error["conversation_id"]
    assert _turn_rows(d, error["conversation_id"]) == [(0, question)]


def test_an_embedded_server_killed_mid_turn_finishes_the_turn_when_started_again(tmp_path):
    # Given: the embedded default (in-process worker, memory broker, SQLite), members that take 2 s
    committee = ranked_committee("embedded-kill", "", options={f"m{i}": {"delay_s": 2.0} for i in range(3)})
    committee = committee.model_copy(
        update={"members": tuple(m.model_copy(update={"queue": ""}) for m in committee.members)}
    )
    (tmp_path / "committee.json").write_text(committee.model_dump_json())
    env = embedded_env(tmp_path, tmp_path / "committee.json")
    server = Server(env, tmp_path)
    question, key = "Who wrote Dune?", "embedded-kill-1"

    # When: the server is killed during the turn and started again
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_chat, server, committee.name, [question], key=key, timeout=30)
        engine = create_engine(f"sqlite:///{tmp_path / 'peerblend.db'}")
        wait_for(
            "the question is asked",
            lambda: _count(engine, "turn") == 1,
            timeout=30,
            tolerate=(OperationalError,),
        )
        server.process.kill()
        server.process.wait()
    assert _count(engine, "turn_result") == 0
    restarted = Server(env, tmp_path)
    try:
        # Then: it finishes that turn by itself, and the retried request gets it
        wait_for("the turn is stored", lambda: _count(engine, "turn_result") == 1, timeout=60)
        retried = _chat(restarted, committee.name, [question], key=key)
    finally:
        stop_process(restarted.process)
        engine.dispose()
    assert retried.status_code == 200, retried.text
    assert retried.json()["choices"][0]["message"]["content"] == f"model0: {question}"
    assert _count_now(tmp_path, "turn") == 1


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"select count(*) from {table}")).scalar() or 0)


def _count_now(home: Path, table: str) -> int:
    engine = create_engine(f"sqlite:///{home / 'peerblend.db'}")
    try:
        return _count(engine, table)
    finally:
        engine.dispose()
