"""Policies and the pairwise baseline through a real in-process worker: skipped work is really skipped."""

from __future__ import annotations

import pytest

from tests.conftest import clear_scripted_calls, scripted_calls, scripted_committee

# m0 answers best by every likelihood reviewer's scores, then m1, m2, m3.
SCORES = {"model0": -0.1, "model1": -0.2, "model2": -0.3, "model3": -0.4}


def _committee(**fields):
    options = {f"m{i}": {"scores": SCORES} for i in range(4)}
    members = scripted_committee(4, member_options=options, **fields)
    # every member reviews by likelihood, so ballots are deterministic
    return members.model_copy(
        update={
            "members": tuple(m.model_copy(update={"review_method": "likelihood"}) for m in members.members)
        }
    )


def _work_per_turn(questions: list[str]) -> list[tuple[set[str], int]]:
    """(models asked to answer, number of review calls) for each question, from the call log."""
    work = []
    for question in questions:
        answered = {
            m
            for m, kind, p in scripted_calls()
            if kind == "generate" and not p.prefill and p.messages[-1].content == question
        }
        reviews = sum(
            1
            for m, kind, payload in scripted_calls()
            if kind == "score" and any(question in text for text in payload)
        )
        work.append((answered, reviews))
    return work


QUESTIONS = [f"question {i}?" for i in range(1, 6)]


def test_p1_drops_the_bottom_half_after_the_first_half(embedded):
    client = embedded(_committee())

    outcomes = client.submit(QUESTIONS, policy="p1").wait(timeout=60)

    work = _work_per_turn(QUESTIONS)
    everyone = {"model0", "model1", "model2", "model3"}
    assert [w[0] for w in work] == [everyone] * 3 + [{"model0", "model1"}] * 2
    assert [w[1] for w in work] == [4] * 3 + [2] * 2  # eliminated members do not review either
    decisions = [t.result["decision"] for t in client.fetch(outcomes[0].conversation_id).turns]
    assert decisions[3]["excluded"] == ["m2", "m3"] and "p1" in decisions[3]["reason"]


def test_p2_reuses_the_top_member_without_review_on_even_turns(embedded):
    client = embedded(_committee())

    outcomes = client.submit(QUESTIONS, policy="p2", top_k=1).wait(timeout=60)

    work = _work_per_turn(QUESTIONS)
    everyone = {"model0", "model1", "model2", "model3"}
    assert [w[0] for w in work] == [everyone, {"model0"}, everyone, {"model0"}, everyone]
    assert [w[1] for w in work] == [4, 0, 4, 0, 4]
    assert [o.status for o in outcomes] == ["ok", "single", "ok", "single", "ok"]
    assert all(o.chosen == "m0" for o in outcomes)


def test_p3_excludes_the_worst_half_for_two_conversations_then_resets(embedded):
    committee = _committee(name="p3-cycle")
    client = embedded(committee)

    per_conversation = []
    for c in range(4):
        questions = [f"c{c} q{t}?" for t in range(2)]
        clear_scripted_calls()
        client.submit(questions, policy="p3").wait(timeout=60)
        per_conversation.append(set().union(*(w[0] for w in _work_per_turn(questions))))

    everyone = {"model0", "model1", "model2", "model3"}
    assert per_conversation == [everyone, {"model0", "model1"}, {"model0", "model1"}, everyone]


def test_pairwise_judges_every_ordered_pair(embedded):
    client = embedded(_committee())

    (outcome,) = client.submit(["Which is best?"], method="pairwise").wait(timeout=60)

    judged = [payload for m, kind, payload in scripted_calls() if kind == "score" and payload == [" A", " B"]]
    assert len(judged) == 4 * 3  # N(N-1) judgements
    stored = client.fetch(outcome.conversation_id).turns[0]
    (review,) = stored.reviews
    assert review["method"] == "pairwise" and review["reviewer"] == "m0"  # the default judge: first reviewer
    assert sum(outcome.scores.values()) == pytest.approx(0.0)  # max logits are antisymmetric


def test_single_member_answers_alone(embedded):
    client = embedded(_committee())

    (outcome,) = client.submit(["Alone?"], method="single:m2").wait(timeout=60)

    assert outcome.chosen == "m2" and outcome.status == "single"
    assert [m for m, kind, _ in scripted_calls()] == ["model2"]
