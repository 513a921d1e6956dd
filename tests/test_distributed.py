"""Integration: real `celery worker` processes on the real Redis and PostgreSQL.

Two workers, as on two machines: one serves the aggregation queue and members
m0, m1; the other serves m2 and m3. The client blends conversations through them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from db import crud
from db.engine import get_engine
from db.migrate import upgrade
from db.models import Candidate, Conversation, Turn, TurnResult
from pipeline.plan import RunConfig
from pipeline.records import TurnContext
from pipeline.service.canvas import final_task_id
from pipeline.service.client import BlendClient
from pipeline.service.settings import Settings
from tests.conftest import REDIS_URL, scripted_committee
from workers.app import create_app
from workers.runtime import runtime_of

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlendClient]:
    tag = uuid.uuid4().hex[:8]
    prefix = f"it{tag}."
    committee = scripted_committee(
        4,
        name=f"it-{tag}",
        queue_prefix=prefix,
        member_options={"m3": {"fail": "model server unreachable"}, "m2": {"delay_s": 0.05}},
    )
    home = tmp_path_factory.mktemp("cluster")
    committee_file = home / "committee.json"
    committee_file.write_text(committee.model_dump_json())
    env = {
        **os.environ,
        "PEERBLEND_BROKER_URL": f"{REDIS_URL}/0",
        "PEERBLEND_RESULT_BACKEND": f"{REDIS_URL}/1",
        "PEERBLEND_DATABASE_URL": postgres_url,
        "PEERBLEND_COMMITTEE_FILE": str(committee_file),
        "PEERBLEND_DEFAULT_QUEUE": f"{prefix}peerblend",
        "PEERBLEND_HOME": str(home),
    }
    settings = Settings(
        **{k.removeprefix("PEERBLEND_").lower(): v for k, v in env.items() if k.startswith("PEERBLEND_")}
    )
    upgrade(settings.database)
    queues = {
        "w1": [settings.default_queue, *(committee.member(m).queue for m in ("m0", "m1"))],
        "w2": [committee.member(m).queue for m in ("m2", "m3")],
    }
    workers = {}
    for name, served in queues.items():
        log = open(home / f"{name}.log", "w")  # noqa: SIM115 - closed at teardown
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            ",".join(served),
            "-n",
            f"{name}-{tag}@%h",
            "-c",
            "2",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        workers[name] = (
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
            log,
        )
    app = create_app(settings, committee)
    _wait_until_ready(app, [f"{name}-{tag}@" for name in workers], home)
    client = BlendClient(
        app, get_engine(settings.database), committee, policy_store=runtime_of(app).policy_store
    )
    client.worker_logs = {name: home / f"{name}.log" for name in workers}  # type: ignore[attr-defined]
    yield client
    for process, _ in workers.values():
        process.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks
    for process, log in workers.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_until_ready(app, prefixes: list[str], home: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        names = {name for reply in replies for name in reply}
        if all(any(n.startswith(p) for n in names) for p in prefixes):
            return
    logs = "\n".join(p.read_text()[-2000:] for p in home.glob("*.log"))
    raise RuntimeError(f"workers did not start within {timeout} s:\n{logs}")


def test_a_conversation_is_blended_by_real_workers(cluster: BlendClient):
    questions = ["Who wrote Dune?", "When was it published?", "What is the sequel called?"]

    outcomes = cluster.submit({"id": "dune", "turns": questions}).wait(timeout=60)

    assert [o.turn_index for o in outcomes] == [0, 1, 2]
    assert all(o.status == "ok" and o.chosen in {"m0", "m1", "m2"} for o in outcomes)
    # Then: PostgreSQL holds every turn once, with the failed member's error recorded.
    with Session(cluster.store.engine) as session:
        conversation_id = outcomes[0].conversation_id
        results = session.exec(select(TurnResult).where(TurnResult.conversation_id == conversation_id)).all()
        assert sorted(r.turn_index for r in results) == [0, 1, 2]
        failed = session.exec(
            select(Candidate).where(Candidate.conversation_id == conversation_id, Candidate.member == "m3")
        ).all()
        assert len(failed) == 3 and all("model server unreachable" in c.error for c in failed)
    stored = cluster.fetch(conversation_id)
    assert [t.result["answer"] for t in stored.turns] == [o.answer for o in outcomes]
    assert stored.external_id == "dune"


def test_concurrent_conversations_get_their_own_answers(cluster: BlendClient):
    handles = [cluster.submit([f"c{i} q{t}?" for t in range(2)]) for i in range(6)]

    for i, handle in enumerate(handles):
        answers = [o.answer for o in handle.wait(timeout=90)]
        assert [a.split(": ", 1)[1] for a in answers] == [f"c{i} q0?", f"c{i} q1?"]


def test_turns_record_stage_timings(cluster: BlendClient):
    (outcome,) = cluster.submit(["How long does this take?"]).wait(timeout=60)

    timings = outcome.timings
    assert timings["generation_s"] >= 0.05  # m2 sleeps 50 ms
    assert timings["total_s"] >= timings["generation_s"] + timings["review_s"]
    assert json.dumps(timings)  # plain JSON numbers


def test_p3_state_stays_consistent_with_many_conversations_at_once(cluster: BlendClient):
    # Given: six p3 conversations submitted at once to the real workers (m3 always fails)
    from pipeline.policy import PolicyState
    from pipeline.store_keys import conversation_key, counter_key, cycle_key

    committee = cluster.committee
    handles = [cluster.submit([f"p3 c{i} q{t}?" for t in range(3)], policy="p3") for i in range(6)]
    for handle in handles:
        handle.wait(timeout=120)

    store = cluster.policy_store
    states = {
        h.conversation_id: PolicyState.from_json(
            store.get(conversation_key(committee.name, "p3", h.conversation_id))
        )
        for h in handles
    }
    # Then: the counter counted six, each conversation has its own ordinal, every turn was folded in once
    assert store.get(counter_key(committee.name, "p3"))["count"] == 6
    assert sorted(s.ordinal for s in states.values()) == list(range(6))
    assert all(s.applied_turns == 3 for s in states.values())
    # and a cycle's scores are exactly what its ranking conversation's stored turns contributed.
    for ranking_conversation, state in states.items():
        if state.ordinal % 3:
            continue
        stored = cluster.fetch(ranking_conversation)
        expected: dict[str, float] = {}
        for turn in stored.turns:
            ballots = max(turn.result["decision"]["ballots"], 1)
            for member in turn.result["decision"]["generators"]:
                expected[member] = (
                    expected.get(member, 0.0) + turn.result["scores"].get(member, 0.0) / ballots
                )
        cycle = store.get(cycle_key(committee.name, "p3", state.ordinal))["scores"]
        assert cycle == pytest.approx(expected)
    # Conversations that sat members out excluded the always-failing m3.
    assert all("m3" in s.excluded for s in states.values() if s.excluded)


def test_each_worker_receives_exactly_its_members_tasks(cluster: BlendClient):
    cluster.submit(["Routed?", "Still routed?"]).wait(timeout=60)

    # Task names carry the stage and the member (generate[m0], review[m2], ...).
    received = {
        name: set(re.findall(r"Task (\w+\[[^\]]+\]|aggregate)\[", path.read_text()))
        for name, path in cluster.worker_logs.items()
    }
    assert received["w1"] == {"generate[m0]", "generate[m1]", "review[m0]", "review[m1]", "aggregate"}
    assert received["w2"] == {"generate[m2]", "generate[m3]", "review[m2]", "review[m3]"}


def test_a_start_message_delivered_twice_launches_its_turn_once(cluster: BlendClient):
    # Given: a conversation stored as sent (attempt 1) whose start message is published twice,
    # as Redis would redeliver it after a worker lost it mid-task
    question = f"Delivered twice {uuid.uuid4().hex[:8]}?"
    conversation_id = uuid.uuid4().hex
    row = Conversation(id=conversation_id, committee=cluster.committee.name, method="peer", n_turns=1)
    turn = Turn(conversation_id=conversation_id, turn_index=0, question=question, attempt=1)
    with Session(cluster.store.engine) as session:
        crud.create_conversation(session=session, conversation=row, turns=[turn])
    context = TurnContext(conversation_id, 0, question)
    cluster.send_turn(context, RunConfig())
    cluster.send_turn(context, RunConfig())

    # When: the turn finishes
    outcome = cluster.wait_turn(conversation_id, 0, timeout=60)

    # Then: the second delivery launched nothing: each member answered the question once
    logs = "\n".join(path.read_text() for path in cluster.worker_logs.values())  # type: ignore[attr-defined]
    assert outcome.status == "ok"
    assert logs.count(f"start of turn {conversation_id}/0 (attempt 1): launched before") == 1
    answered = re.findall(
        rf"Task generate\[(m\d)\]\[[^\]]+\] succeeded in [^:]+: .*?{re.escape(question)}", logs
    )
    assert sorted(answered) == ["m0", "m1", "m2"]  # m3 fails, recorded without a text
    with Session(cluster.store.engine) as session:
        stored = crud.get_turn(session=session, conversation_id=conversation_id, turn_index=0)
        assert stored is not None and (stored.attempt, stored.started) == (1, 1)


def test_a_client_keeps_no_result_subscription_once_its_turns_are_read(cluster: BlendClient):
    # Given: conversations submitted and waited for (some read from the database after they
    # finished; every module test before this one waited on turns of this client too)
    handles = [cluster.submit([f"Subscribed {i}?", "And then?", "And after that?"]) for i in range(4)]
    handles[0].wait(timeout=60)
    time.sleep(0.5)
    for handle in handles:
        handle.wait(timeout=60)

    # Then: the client waits on no task's result any more (a server would otherwise grow a
    # subscription per turn: every task of every canvas it published)
    waiting = cluster.app.backend._pending_results
    assert [dict(mapping) for mapping in waiting] == [{}, {}]


def test_a_turn_stores_only_its_aggregate_result_and_leaves_nobody_subscribed(cluster: BlendClient):
    import redis

    with redis.Redis.from_url(f"{REDIS_URL}/1") as results:
        # Given: the result keys, and the result channels someone listens on, before
        stored_before = set(results.scan_iter("celery-task-meta-*", count=1000))
        listened_before = set(results.pubsub_channels("celery-task-meta-*"))

        # When: a two-turn conversation runs through the real workers and is read
        handle = cluster.submit(["Stored once?", "And the second turn?"])
        outcomes = list(handle.wait(timeout=60))

        # Then: only the aggregates stored a Celery result (answers and reviews reached them
        # through the chords: nobody fetches them by task id)
        assert [o.status for o in outcomes] == ["ok", "ok"]
        stored = {
            k.decode() for k in set(results.scan_iter("celery-task-meta-*", count=1000)) - stored_before
        }
        assert stored == {f"celery-task-meta-{final_task_id(handle.conversation_id, t)}" for t in (0, 1)}

        # And: nobody stays subscribed to a result of the turns: not the client (it let go once it
        # read them), not a worker (sending turn 2's canvas, or a chord's body once the answers
        # are in, subscribes to nothing); an unsubscribe may take a moment to reach Redis
        deadline = time.monotonic() + 10
        while (left := set(results.pubsub_channels("celery-task-meta-*")) - listened_before) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert left == set()


def test_a_worker_that_launches_a_turn_drops_the_subscriptions_building_its_canvas_opened(tmp_path):
    # Given: an app on the real Redis, as in a worker, with queues no worker consumes
    from pipeline.plan import TurnPlan
    from pipeline.policy import TurnRoles
    from pipeline.service.canvas import turn_signature
    from workers.dispatch import launch

    tag = uuid.uuid4().hex[:8]
    committee = scripted_committee(3, name=f"launch-{tag}", queue_prefix=f"l{tag}.")
    settings = Settings(
        broker_url=f"{REDIS_URL}/0",
        result_backend=f"{REDIS_URL}/1",
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        default_queue=f"l{tag}.peerblend",
    )
    app = create_app(settings, committee)
    members = tuple(committee.generators)
    plans = [
        TurnPlan(TurnContext(f"c{i}", 0, "q?"), RunConfig(), TurnRoles(members, members, "full"))
        for i in range(2)
    ]
    try:
        # When: one turn's canvas is applied as Celery does it, the other launched
        turn_signature(plans[0], app=app).apply_async()
        opened = sum(len(mapping) for mapping in app.backend._pending_results)
        launch(app, plans[1])

        # Then: plain applying leaves the process subscribed to its tasks; launching adds nothing
        assert opened >= 3
        assert sum(len(mapping) for mapping in app.backend._pending_results) == opened
    finally:
        import redis

        with redis.Redis.from_url(f"{REDIS_URL}/0") as broker:
            broker.delete(settings.default_queue, *committee.queues)
        app.close()


def test_a_worker_whose_model_cannot_load_fails_at_start(tmp_path):
    committee = tmp_path / "committee.toml"
    committee.write_text(
        'name = "broken"\n'
        '[[members]]\nname = "ok"\nbackend = "scripted"\nmodel = "x"\n'
        '[[members]]\nname = "broken"\nbackend = "transformers"\nmodel = "/no/such/model"\nqueue = "broken-q"\n'
    )
    env = {
        **os.environ,
        "PEERBLEND_BROKER_URL": f"{REDIS_URL}/0",
        "PEERBLEND_RESULT_BACKEND": f"{REDIS_URL}/1",
        "PEERBLEND_COMMITTEE_FILE": str(committee),
        "PEERBLEND_HOME": str(tmp_path),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        "broken-q",
        "-P",
        "threads",
        "--without-gossip",
        "--without-mingle",
    ]

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert "cannot load the models for queues ['broken-q']" in done.stderr + done.stdout
    assert "/no/such/model" in done.stderr + done.stdout
