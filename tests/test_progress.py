"""A running turn's events: each candidate, ballot and judgement written by the task that made it."""

from __future__ import annotations


def test_every_candidate_and_ballot_of_a_live_turn_is_an_event(embedded):
    client = embedded()
    chat = client.start()
    outcome = chat.ask("Who wrote Dune?", timeout=30)

    found = client.store.turn_events(chat.conversation_id, 0)

    candidates = {e["member"]: e["record"] for e in found if e["kind"] == "candidate"}
    ballots = {e["member"]: e["record"] for e in found if e["kind"] == "ballot"}
    assert set(candidates) == {"m0", "m1", "m2"}
    assert candidates[outcome.chosen]["text"] == outcome.answer
    assert set(ballots) == {"m0", "m1", "m2"}
    assert all(b["ranking"] and "candidates" not in b for b in ballots.values())
    # Every candidate was written before any ballot (the reviews need them all), ids in order.
    kinds = [e["kind"] for e in found]
    assert kinds == sorted(kinds, key=lambda k: k != "candidate")
    assert [e["id"] for e in found] == sorted(e["id"] for e in found)
    # Reading after the last id seen gives nothing new.
    assert client.store.turn_events(chat.conversation_id, 0, after=found[-1]["id"]) == []


def test_a_submitted_conversation_writes_no_events(embedded):
    # (nobody watches a replay turn by turn: its tasks skip the writes)
    client = embedded()
    handle = client.submit(["Who wrote Dune?"])
    handle.wait(timeout=30)

    assert client.store.turn_events(handle.conversation_id, 0) == []


def test_a_pairwise_turn_writes_its_judgements(embedded):
    client = embedded()
    chat = client.start(method="pairwise")
    chat.ask("Who wrote Dune?", timeout=30)

    found = client.store.turn_events(chat.conversation_id, 0)

    judgements = [e["record"] for e in found if e["kind"] == "judgement"]
    assert len(judgements) == 6  # every ordered pair of 3 candidates
    assert {(j["first"], j["second"]) for j in judgements} == {
        (a, b) for a in ("m0", "m1", "m2") for b in ("m0", "m1", "m2") if a != b
    }
