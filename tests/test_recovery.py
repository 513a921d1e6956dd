"""Time limits, retried writes, exactly-once sending, waits that read the truth, and recovery.

Embedded deployments (in-process worker, SQLite) for speed; the claim race also
runs on the real PostgreSQL. The fault-injection scenarios with real worker
processes are in test_faults.py.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from db import crud
from db.engine import get_engine
from db.migrate import upgrade
from db.models import Conversation, Turn, TurnResult
from db.retry import with_retries
from pipeline.conversation import Conversation as UserConversation
from pipeline.conversation import Limits, Question
from pipeline.errors import BlendError, InputError
from pipeline.plan import RunConfig
from pipeline.records import TurnContext
from pipeline.service.canvas import final_task_id
from tests.conftest import scripted_calls, scripted_committee
from workers.deadline import Timeout, call_with_deadline
from workers.recovery import recover
from workers.runtime import runtime_of

# --- deadlines -------------------------------------------------------------------------------------


def test_a_call_within_its_deadline_returns_its_result_or_raises_its_error():
    assert call_with_deadline("quick", 5.0, lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline("broken", 5.0, lambda: 1 / 0)


def test_a_call_past_its_deadline_raises_timeout_naming_it():
    release = threading.Event()

    with pytest.raises(Timeout, match=r"timeout: generate\[m1\] gave no result within 0.2 s"):
        call_with_deadline("generate[m1]", 0.2, release.wait)
    release.set()


def test_calls_reuse_one_helper_thread_and_a_late_call_does_not_hold_up_the_next():
    release = threading.Event()
    call_with_deadline("warm", 5.0, lambda: None)
    helpers = lambda: sum(t.name == "peerblend-call" for t in threading.enumerate())  # noqa: E731
    before = helpers()

    # Given: many calls in a row reuse this thread's helper
    assert [call_with_deadline("quick", 5.0, lambda i=i: i) for i in range(20)] == list(range(20))
    assert helpers() == before

    # When: one call hangs past its deadline
    with pytest.raises(Timeout):
        call_with_deadline("hung", 0.2, release.wait)

    # Then: the next call runs at once on a new helper (the hung one is left to its call)
    assert call_with_deadline("after", 5.0, lambda: "ran") == "ran"
    assert helpers() == before + 1
    release.set()


def test_a_forked_child_gets_its_own_helper():
    call_with_deadline("in the parent", 5.0, lambda: None)  # the parent's helper, a thread the child lacks
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, whatever happens
        try:
            os.write(writer, str(call_with_deadline("in the child", 5.0, lambda: 7)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 64)
    os.waitpid(pid, 0)
    assert answer == b"7"


def test_a_hanging_member_is_excluded_with_timeout_and_the_turn_completes(embedded):
    base = scripted_committee(3, member_options={"m1": {"delay_s": 30}})
    members = tuple(m.model_copy(update={"timeout_s": 0.5}) if m.name == "m1" else m for m in base.members)
    client = embedded(base.model_copy(update={"members": members, "name": "hang"}))

    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=60)

    assert outcome.chosen in {"m0", "m2"} and "m1" not in outcome.ranking
    stored = client.fetch(outcome.conversation_id).turns[0]
    late = next(c for c in stored.candidates if c["member"] == "m1")
    assert late["error"].startswith("timeout: generate[m1]")
    # m1 also reviews: its review timed out too and was recorded, not counted
    review = next(r for r in stored.reviews if r["reviewer"] == "m1")
    assert review["status"] == "timeout"
    assert stored.result["decision"]["excluded_failed"]["m1"].startswith("timeout")


# --- retried writes --------------------------------------------------------------------------------


def _unreachable() -> OperationalError:
    return OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))


def test_a_write_is_retried_while_the_database_is_unreachable():
    failures = [_unreachable(), _unreachable()]
    pauses: list[float] = []

    def work() -> str:
        if failures:
            raise failures.pop()
        return "stored"

    assert with_retries("turn c/0", work, budget_s=60, sleep=pauses.append) == "stored"
    assert len(pauses) == 2 and pauses[1] > 0


def test_other_database_errors_are_not_retried():
    calls = []

    def work() -> None:
        calls.append(1)
        raise IntegrityError("INSERT ...", {}, ValueError("duplicate"))

    with pytest.raises(IntegrityError):
        with_retries("turn c/0", work, budget_s=60, sleep=lambda _: None)
    assert len(calls) == 1


def test_retries_stop_when_the_budget_is_spent():
    def work() -> None:
        raise _unreachable()

    with pytest.raises(OperationalError):
        with_retries("turn c/0", work, budget_s=0.3, sleep=time.sleep)


def test_a_turn_waits_out_a_database_blink_while_reading_its_reviewer_weights(embedded, monkeypatch):
    # Given: a committee whose verdict reads learned reviewer trust from the database, and a
    # database that is unreachable for the first two reads of the policy store
    committee = scripted_committee(3, name="blink-weights").model_copy(update={"reviewer_weights": "online"})
    client = embedded(committee)
    runtime = runtime_of(client.app)
    real = runtime.policy_store
    failures = [_unreachable(), _unreachable()]
    reads: list[str] = []

    class Blinking:
        def get(self, key: str) -> dict | None:
            reads.append(key)
            if failures:
                raise failures.pop()
            return real.get(key)

        def update(self, key, change):  # noqa: ANN001, ANN201
            return real.update(key, change)

    monkeypatch.setattr(runtime, "policy_store", Blinking())
    monkeypatch.setattr("db.retry.FIRST_DELAY_S", 0.01)

    # When: a turn is blended
    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=60)

    # Then: the reads were retried and the turn finished, stored once
    assert outcome.status == "ok"
    assert not failures and len(reads) >= 3
    stored = client.fetch(outcome.conversation_id).turns[0]
    assert stored.result is not None and stored.result["answer"] == outcome.answer


# --- exactly-once sending --------------------------------------------------------------------------


def _stored_turn(url: str) -> tuple[str, int]:
    upgrade(url)
    engine = get_engine(url)
    conversation_id = f"c{time.monotonic_ns()}"
    conversation = Conversation(id=conversation_id, committee="x", method="peer", n_turns=1)
    with Session(engine) as session:
        crud.create_conversation(
            session=session,
            conversation=conversation,
            turns=[Turn(conversation_id=conversation_id, turn_index=0, question="q?")],
        )
    return conversation_id, 0


@pytest.mark.services
def test_of_many_concurrent_senders_exactly_one_claims_a_turn(postgres_url):
    conversation_id, turn_index = _stored_turn(postgres_url)
    engine = get_engine(postgres_url)
    barrier, won = threading.Barrier(8), []

    def send() -> None:
        barrier.wait()
        with Session(engine) as session:
            claimed = crud.claim_send(
                session=session, conversation_id=conversation_id, turn_index=turn_index, seen_attempt=0
            )
        if claimed is not None:
            won.append(claimed)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert won == [1]


def test_a_redelivered_aggregate_does_not_send_the_next_turn_again(embedded):
    client = embedded()
    handle = client.submit(["Who wrote Dune?", "When was it published?"])
    handle.wait(timeout=30)
    second_question_calls = len(_generations_of("When was it published?"))

    # When turn 0's aggregate runs again with its stored inputs (a redelivery)
    _rerun_aggregate(client, handle.conversation_id)

    # Then turn 1 was not sent again: no new generation, still attempt 1
    time.sleep(0.5)  # a duplicate chain would have started by now on the in-process worker
    assert len(_generations_of("When was it published?")) == second_question_calls == 3
    with Session(client.store.engine) as session:
        turn = crud.get_turn(session=session, conversation_id=handle.conversation_id, turn_index=1)
        assert turn is not None and turn.attempt == 1


def test_a_start_message_delivered_twice_launches_its_turn_once(embedded):
    # Given: a conversation stored as sent (attempt 1) whose start message arrives twice
    client = embedded()
    question = f"Who wrote Dune? {time.monotonic_ns()}"
    conversation_id = _stalled_conversation(client, [question, "When?"], sent_ago_s=0)
    first = TurnContext(conversation_id, 0, question, n_turns=2)
    client.send_turn(first, RunConfig())
    client.send_turn(first, RunConfig())

    # When: the conversation finishes
    outcomes = client.handle(conversation_id).wait(timeout=30)

    # Then: turn 0 was launched once: each member answered once, attempt and launch stay 1
    time.sleep(0.5)  # a duplicate canvas would have run by now on the in-process worker
    assert [o.turn_index for o in outcomes] == [0, 1]
    assert len(_generations_of(question)) == 3
    with Session(client.store.engine) as session:
        turn = crud.get_turn(session=session, conversation_id=conversation_id, turn_index=0)
        assert turn is not None and (turn.attempt, turn.started) == (1, 1)


def test_a_stale_start_message_of_a_replaced_attempt_launches_nothing(embedded):
    # Given: a turn whose attempt 1 never ran, resent as attempt 2 (resume), and finished
    client = embedded()
    question = f"Who wrote Emma? {time.monotonic_ns()}"
    conversation_id = _stalled_conversation(client, [question], sent_ago_s=3600)
    client.resume(conversation_id)
    (outcome,) = client.handle(conversation_id).wait(timeout=30)
    assert len(_generations_of(question)) == 3

    # When: attempt 1's start message arrives late
    client.send_turn(TurnContext(conversation_id, 0, question, attempt=1), RunConfig())

    # Then: nothing runs again, and the stored turn stands
    time.sleep(0.5)
    assert len(_generations_of(question)) == 3
    assert client.wait_turn(conversation_id, 0, timeout=10) == outcome
    with Session(client.store.engine) as session:
        turn = crud.get_turn(session=session, conversation_id=conversation_id, turn_index=0)
        assert turn is not None and (turn.attempt, turn.started) == (2, 2)


def test_a_resent_first_turn_opens_its_policy_state_in_the_worker(embedded):
    # Given: a p2 conversation of three turns whose first start message was lost (never ran)
    client = embedded()
    questions = [f"p2 q{t}? {time.monotonic_ns()}" for t in range(3)]
    conversation_id = _stalled_conversation(client, questions, sent_ago_s=3600, policy="p2")

    # When: it is resumed
    outcomes = client.resume(conversation_id).wait(timeout=30)

    # Then: the worker opened the policy state and p2 decided every turn (ranked, reused, ranked)
    assert [o.turn_index for o in outcomes] == [0, 1, 2]
    decisions = [t.result["decision"]["ranked"] for t in client.fetch(conversation_id).turns]
    assert decisions == [True, False, True]
    with Session(client.store.engine) as session:
        turns = crud.list_turns(session=session, conversation_id=conversation_id)
        assert [(t.attempt, t.started) for t in turns] == [(2, 2), (1, 1), (1, 1)]


def _generations_of(question: str) -> list:
    return [
        p
        for _, kind, p in scripted_calls()
        if kind == "generate" and not p.prefill and p.messages[-1].content == question
    ]


def _rerun_aggregate(client, conversation_id: str) -> None:
    from pipeline.plan import RunConfig
    from pipeline.policy import TurnRoles
    from pipeline.records import CandidateRecord, ReviewRecord, TurnContext

    stored = client.fetch(conversation_id).turns[0]
    candidates = tuple(
        CandidateRecord(c["member"], c["text"], c["error"], c["seconds"]) for c in stored.candidates
    )
    reviews = [
        ReviewRecord(
            r["reviewer"], r["method"], r["status"], tuple(r["ranking"]), candidates=candidates
        ).to_json()
        for r in stored.reviews
    ]
    members = ("m0", "m1", "m2")
    context = TurnContext(conversation_id, 0, stored.question, n_turns=2).to_json()
    client.app.tasks["workers.aggregate"].apply(
        args=(reviews,),
        kwargs={
            "turn": context,
            "run": RunConfig().to_json(),
            "decision": TurnRoles(members, members, "full ranking").to_json(),
        },
    ).get()


# --- waits read the truth; recovery ----------------------------------------------------------------


def test_a_stale_failure_does_not_hide_a_stored_turn(embedded):
    client = embedded()
    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=30)

    # Given the result backend says the turn's task failed (as after a crash and redelivery)
    task_id = final_task_id(outcome.conversation_id, 0, 1)
    client.app.backend.mark_as_failure(task_id, RuntimeError("worker lost"))

    # Then waiting reads the stored turn
    assert client.wait_turn(outcome.conversation_id, 0, timeout=10) == outcome


def _stalled_conversation(client, questions: list[str], *, sent_ago_s: float, policy: str = "full") -> str:
    """A conversation stored as sent ``sent_ago_s`` ago whose turn 0 never ran (a lost message)."""
    conversation_id = f"stalled{time.monotonic_ns()}"
    row = Conversation(
        id=conversation_id,
        committee=client.committee.name,
        method="peer",
        policy=policy,
        n_turns=len(questions),
    )
    turns = [Turn(conversation_id=conversation_id, turn_index=i, question=q) for i, q in enumerate(questions)]
    turns[0].attempt, turns[0].sent_at = 1, crud.utc_now() - timedelta(seconds=sent_ago_s)
    with Session(client.store.engine) as session:
        crud.create_conversation(session=session, conversation=row, turns=turns)
    return conversation_id


def test_a_failed_attempt_is_reported_then_resume_finishes_the_turn(embedded):
    client = embedded()
    conversation_id = _stalled_conversation(client, ["Who wrote Dune?"], sent_ago_s=0)
    client.app.backend.mark_as_failure(final_task_id(conversation_id, 0, 1), RuntimeError("boom"))

    with pytest.raises(BlendError, match=r"turn 0 .* failed \(attempt 1\).*boom"):
        client.wait_turn(conversation_id, 0, timeout=10)

    client.resume(conversation_id)
    outcome = client.wait_turn(conversation_id, 0, timeout=30)
    assert outcome.status == "ok"
    assert client.store.progress(conversation_id, 0) == outcome


def test_recover_resends_only_conversations_without_progress(embedded):
    client = embedded()
    stalled = _stalled_conversation(client, ["Who wrote Dune?", "When?"], sent_ago_s=3600)
    recent = _stalled_conversation(client, ["Who wrote Emma?"], sent_ago_s=0)

    resent = recover(client, older_than_s=600)

    assert [(c, t) for c, t, _ in resent] == [(stalled, 0)]
    outcomes = client.handle(stalled).wait(timeout=30)
    assert [o.turn_index for o in outcomes] == [0, 1]
    with Session(client.store.engine) as session:
        rows = session.exec(select(TurnResult).where(TurnResult.conversation_id == stalled)).all()
        assert len(rows) == 2
        assert crud.get_turn(session=session, conversation_id=stalled, turn_index=0).attempt == 2
        assert crud.get_turn(session=session, conversation_id=recent, turn_index=0).attempt == 1
    assert recover(client, older_than_s=600) == []  # nothing stalled any more (recent is too young)


# --- limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        (
            UserConversation((Question("x" * 101),)),
            "question 1 of conversation .* 101 characters; the limit is 100",
        ),
        (
            UserConversation((Question("q?"),), passage="p" * 1001),
            "passage .* 1,001 characters; the limit is 1,000",
        ),
        (UserConversation(tuple(Question(f"q{i}?") for i in range(4))), "4 turns; the limit is 3"),
        (UserConversation((Question("a\x00b"),)), "NUL character"),
        (UserConversation((Question("a\ud800b"),)), "lone surrogate"),
    ],
)
def test_limits_refuse_what_cannot_travel_or_be_stored(conversation, message):
    with pytest.raises(InputError, match=message):
        Limits(max_question_chars=100, max_passage_chars=1000, max_turns=3).check(conversation)


def test_submit_refuses_an_oversized_question_and_stores_nothing(embedded):
    client = embedded()
    with Session(client.store.engine) as session:
        before = len(session.exec(select(Conversation)).all())

    with pytest.raises(InputError, match="the limit is 8,000"):
        client.submit(["x" * 1_000_000])

    with Session(client.store.engine) as session:
        assert len(session.exec(select(Conversation)).all()) == before


def test_a_resent_live_turn_keeps_its_requests_bounds(embedded, monkeypatch):
    # Given: a live question asked with max_tokens 2 and a stop string, whose message was lost
    client = embedded()
    chat = client.start()
    question = f"Who wrote Dune, in 1965? {time.monotonic_ns()}"
    with monkeypatch.context() as lost:
        lost.setattr(client, "send_turn", lambda context, run: None)
        index = chat.send(question, max_new_tokens=2, stop=[","])

    # When: it is sent again (what `peerblend recover` and a broker restart do)
    client.resume(chat.conversation_id)
    outcome = client.wait_turn(chat.conversation_id, index, timeout=30)

    # Then: the new attempt runs under the request's bounds, as the first would have
    assert re.fullmatch(r"model\d: Who", outcome.answer), outcome.answer
    with Session(client.store.engine) as session:
        (turn,) = crud.list_turns(session=session, conversation_id=chat.conversation_id)
    assert (turn.attempt, turn.max_new_tokens, turn.stop) == (2, 2, [","])
