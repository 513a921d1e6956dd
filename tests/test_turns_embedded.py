"""Task tests: whole conversations through a real in-process Celery worker.

The embedded deployment runs the same canvas (group -> chord -> aggregate) on
the memory broker, with the scripted backend standing in for models.
"""

from __future__ import annotations

import pytest
from rich.console import Console
from sqlmodel import Session, func, select

from db.models import Conversation, TurnResult
from pipeline.committee import Member
from pipeline.errors import InputError
from tests.conftest import scripted_calls, scripted_committee
from workers.report import print_turn

QUESTIONS = ["Who wrote Dune?", "When was it published?", "What is the sequel called?"]


def _prompts_of(model: str) -> list:
    return [p for m, kind, p in scripted_calls() if m == model and kind == "generate" and not p.prefill]


def test_a_conversation_is_blended_turn_by_turn(embedded):
    client = embedded()
    handle = client.submit({"turns": QUESTIONS})

    outcomes = handle.wait(timeout=30)

    assert [o.turn_index for o in outcomes] == [0, 1, 2]
    for outcome, question in zip(outcomes, QUESTIONS, strict=True):
        assert outcome.status == "ok"
        assert outcome.answer == f"model{outcome.chosen[1:]}: {question}"
        assert set(outcome.scores) == {"m0", "m1", "m2"}
    stored = client.fetch(handle.conversation_id)
    assert stored.finished
    assert [len(t.candidates) for t in stored.turns] == [3, 3, 3]
    assert [len(t.reviews) for t in stored.turns] == [3, 3, 3]


def test_each_turn_sees_the_blended_answers_before_it(embedded):
    client = embedded()
    outcomes = client.submit({"turns": QUESTIONS}).wait(timeout=30)

    # Then: the last generation prompt of every member holds turns 0 and 1 with their blended answers.
    for model in ("model0", "model1", "model2"):
        last = _prompts_of(model)[-1]
        contents = [m.content for m in last.messages[1:]]
        assert contents == [QUESTIONS[0], outcomes[0].answer, QUESTIONS[1], outcomes[1].answer, QUESTIONS[2]]


def test_a_failing_member_is_excluded_and_the_turn_completes(embedded):
    committee = scripted_committee(3, member_options={"m1": {"fail": "GPU on fire"}})
    client = embedded(committee)

    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=30)

    assert outcome.status == "ok"
    assert "m1" not in outcome.ranking and outcome.chosen in {"m0", "m2"}
    stored = client.fetch(outcome.conversation_id).turns[0]
    failed = next(c for c in stored.candidates if c["member"] == "m1")
    assert "GPU on fire" in failed["error"]
    # Its review fails too (same backend), recorded as an error with no ballot.
    review = next(r for r in stored.reviews if r["reviewer"] == "m1")
    assert review["status"] == "error" and review["ranking"] == []
    # Reviewers were shown only the usable candidates.
    assert all("m1" not in r["shown_order"] for r in stored.reviews)


def test_an_unparsable_ballot_is_recorded_and_dropped(embedded):
    committee = scripted_committee(3, member_options={"m1": {"review_reply": "they all look fine to me"}})
    client = embedded(committee)

    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=30)

    review = next(r for r in client.fetch(outcome.conversation_id).turns[0].reviews if r["reviewer"] == "m1")
    assert review["status"] == "unparsable" and review["ranking"] == []
    assert review["raw"] == "they all look fine to me"
    # Two ballots remain (m0, m2 score by likelihood); each hands out 3 points.
    assert sum(outcome.scores.values()) == pytest.approx(2 * 3)


def test_a_constrained_ballot_is_stored_and_shown_with_its_path(embedded):
    # Given m1 reviews by ranking on a backend that writes complete ballots (Capability.BALLOT)
    committee = scripted_committee(3, member_options={"m1": {"ballot": "constrained"}})
    client = embedded(committee)

    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=30)

    # Then the stored review says which path wrote the ballot, and `peerblend show` prints it
    turn = client.fetch(outcome.conversation_id).turns[0]
    review = next(r for r in turn.reviews if r["reviewer"] == "m1")
    assert review["status"] == "constrained" and len(review["ranking"]) == 3
    assert review["raw"] == "constrained: C > B > A"
    console = Console(record=True, width=120)
    print_turn(console, turn)
    assert "constrained" in console.export_text()


def test_when_every_member_fails_the_turn_still_completes(embedded):
    committee = scripted_committee(2, member_options={m: {"fail": "down"} for m in ("m0", "m1")})
    client = embedded(committee)

    outcomes = client.submit(["q1?", "q2?"]).wait(timeout=30)

    assert [o.status for o in outcomes] == ["no_candidates", "no_candidates"]
    assert all(o.answer == "" and o.chosen is None for o in outcomes)


def test_fusion_writes_the_answer_with_the_aggregator(embedded):
    committee = scripted_committee(
        3, aggregator="m2", top_k=2, member_options={"m2": {"replies": ["the fused answer"]}}
    )
    client = embedded(committee)

    (outcome,) = client.submit(["Who wrote Dune?"], top_k=2).wait(timeout=30)

    assert outcome.status == "fused" and outcome.chosen is None
    assert outcome.answer == "the fused answer"
    fusion_prompt = [p for p in _prompts_of("model2") if "best-rated first" in p.messages[-1].content][-1]
    listed = [line for line in fusion_prompt.messages[-1].content.splitlines() if line.startswith("- ")]
    assert len(listed) == 2  # top_k candidates, whatever the committee size


def test_a_late_aggregator_leaves_the_top_candidate_recorded(embedded):
    # Given: an aggregator (fusing only) that takes 2 s where its calls may take 0.3 s
    base = scripted_committee(3, top_k=2)
    slow = Member(
        name="fuser",
        backend="scripted",
        model="fuser",
        roles=("aggregator",),
        timeout_s=0.3,
        options={"delay_s": 2.0, "replies": ["too late"]},
    )
    committee = base.model_copy(update={"members": (*base.members, slow), "aggregator": "fuser"})
    client = embedded(committee)

    (outcome,) = client.submit(["Who wrote Dune?"], top_k=2).wait(timeout=30)

    # Then: the turn ends with the best-ranked candidate, and says the fusion timed out
    assert (
        outcome.status == "fusion_failed" and outcome.answer == f"model{outcome.chosen[1:]}: Who wrote Dune?"
    )
    record = client.fetch(outcome.conversation_id).turns[0].result["decision"]
    assert "Timeout" in record["fusion_error"] and "fuse[fuser]" in record["fusion_error"]


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ({"turns": []}, "empty"),
        ({"turns": ["ok?", "   "]}, "turn 2"),
        ({"turns": "not a list"}, "must be a list"),
        (42, "got int"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(embedded, conversation, message):
    client = embedded()
    count = select(func.count()).select_from(Conversation)
    with Session(client.store.engine) as session:
        before = session.exec(count).one()
    with pytest.raises(InputError, match=message):
        client.submit(conversation)
    with Session(client.store.engine) as session:
        assert session.exec(count).one() == before
    assert scripted_calls() == []


@pytest.mark.parametrize(
    ("method", "policy", "top_k", "message"),
    [
        ("vote", "full", None, "unknown method 'vote'"),
        ("peer", "sometimes", None, "unknown policy 'sometimes'"),
        ("peer", "full", 2, "names no aggregator"),  # this committee has none, so it cannot fuse
        ("peer", "full", 0, "top_k must be a positive integer"),
        ("single:m9", "full", None, "'m9' is not a generator"),
        ("single:m0", "p2", None, "does not apply"),
    ],
)
def test_unknown_method_or_policy_is_refused(embedded, method, policy, top_k, message):
    client = embedded()
    with pytest.raises(InputError, match=message):
        client.submit(["q?"], method=method, policy=policy, top_k=top_k)


def test_a_redelivered_aggregate_stores_nothing_twice(embedded):
    client = embedded()
    (outcome,) = client.submit(["Who wrote Dune?"]).wait(timeout=30)
    stored = client.fetch(outcome.conversation_id).turns[0]

    # When: the aggregate task runs again with the same inputs (as after a redelivery).
    reviews = [dict(r) for r in stored.reviews]
    task = client.app.tasks["workers.aggregate"]
    from pipeline.plan import RunConfig
    from pipeline.policy import TurnRoles
    from pipeline.records import CandidateRecord, ReviewRecord, TurnContext

    decision = TurnRoles(("m0", "m1", "m2"), ("m0", "m1", "m2"), "full ranking")

    candidates = tuple(
        CandidateRecord(c["member"], c["text"], c["error"], c["seconds"]) for c in stored.candidates
    )
    records = [
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
            0.0,
            candidates,
        ).to_json()
        for r in reviews
    ]
    context = TurnContext(outcome.conversation_id, 0, "Who wrote Dune?").to_json()
    again = task.apply(
        args=(records,),
        kwargs={"turn": context, "run": RunConfig().to_json(), "decision": decision.to_json()},
    ).get()

    # Then: the stored result is returned and there is still one result row.
    assert again["answer"] == outcome.answer
    with Session(client.store.engine) as session:
        count = (
            select(func.count())
            .select_from(TurnResult)
            .where(TurnResult.conversation_id == outcome.conversation_id)
        )
        assert session.exec(count).one() == 1


def test_many_conversations_at_once_keep_their_own_answers(embedded):
    client = embedded()
    handles = [client.submit([f"conversation {i} question {t}?" for t in range(3)]) for i in range(8)]

    for i, handle in enumerate(handles):
        for t, outcome in enumerate(handle.wait(timeout=60)):
            assert outcome.answer.endswith(f"conversation {i} question {t}?")
