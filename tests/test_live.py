"""Live conversations: ask the next question after reading the last answer; policies with an open end."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.context import Exchange
from pipeline.errors import InputError
from pipeline.service.live import LiveConversation
from tests.conftest import scripted_calls, scripted_committee


def _likelihood_committee(name: str = "live", **fields):
    """Four scripted members that all review by likelihood with fixed scores: m0 > m1 > m2 > m3."""
    base = scripted_committee(4, name=name, **fields)
    scores = {"scores": {"model0": -0.1, "model1": -0.2, "model2": -0.3, "model3": -0.4}}
    members = tuple(
        m.model_copy(update={"review_method": "likelihood", "options": scores}) for m in base.members
    )
    return base.model_copy(update={"members": members})


def test_each_question_sees_the_blended_answers_before_it(embedded):
    client = embedded()
    chat = client.start(history=[("Who wrote Dune?", "Frank Herbert")], system="Answer in English.")

    first = chat.ask("When was it published?", timeout=30)
    second = chat.ask("And the sequel?", timeout=30)

    assert (first.turn_index, second.turn_index) == (0, 1)
    last_prompt = [p for _, kind, p in scripted_calls() if kind == "generate" and not p.prefill][-1]
    contents = [m.content for m in last_prompt.messages]
    assert contents[1:] == [
        "Who wrote Dune?",
        "Frank Herbert",
        "When was it published?",
        first.answer,
        "And the sequel?",
    ]
    assert "Answer in English." in contents[0]  # the system message reaches the generators
    stored = client.fetch(chat.conversation_id)
    assert [t.question for t in stored.turns] == ["When was it published?", "And the sequel?"]
    assert stored.finished


def test_asking_while_a_turn_runs_is_refused(embedded):
    slow = scripted_committee(3, name="live-slow", member_options={"m0": {"delay_s": 1.0}})
    client = embedded(slow)
    chat = client.start()

    chat.send("Who wrote Dune?")
    with pytest.raises(InputError, match="still running"):
        chat.send("When?")
    assert client.wait_turn(chat.conversation_id, 0, timeout=30).turn_index == 0
    assert chat.ask("When?", timeout=30).turn_index == 1


def test_p1_on_a_live_conversation_ranks_the_first_r_turns_then_drops_the_bottom_half(embedded):
    client = embedded(_likelihood_committee(p1_live_rank_turns=2))
    chat = client.start(policy="p1")

    for question in ["q1?", "q2?", "q3?", "q4?", "q5?"]:
        chat.ask(question, timeout=30)

    decisions = [t.result["decision"] for t in client.fetch(chat.conversation_id).turns]
    assert [len(d["generators"]) for d in decisions] == [4, 4, 2, 2, 2]
    assert all(set(d["excluded"]) == {"m2", "m3"} for d in decisions[2:])
    assert "first 2" in decisions[0]["reason"]


def test_p2_alternates_on_a_live_conversation(embedded):
    client = embedded(_likelihood_committee(name="live-p2"))
    chat = client.start(policy="p2")

    for question in ["q1?", "q2?", "q3?", "q4?"]:
        chat.ask(question, timeout=30)

    decisions = [t.result["decision"] for t in client.fetch(chat.conversation_id).turns]
    assert [d["ranked"] for d in decisions] == [True, False, True, False]
    assert decisions[1]["generators"] == ["m0"]


def test_p3_counts_live_conversations_like_submitted_ones(embedded):
    client = embedded(_likelihood_committee(name="live-p3"))
    seen = []
    for _ in range(3):
        chat = client.start(policy="p3")
        chat.ask("q1?", timeout=30)
        chat.ask("q2?", timeout=30)
        seen.append([t.result["decision"] for t in client.fetch(chat.conversation_id).turns])

    assert all(len(d["generators"]) == 4 for d in seen[0])  # the cycle's ranking conversation
    for later in seen[1:]:
        assert all(set(d["excluded"]) == {"m2", "m3"} for d in later)


def test_the_async_twin_runs_many_chats_at_once(embedded):
    client = embedded()

    async def chat(i: int) -> str:
        live: LiveConversation = client.start()
        outcome = await live.aask(f"question {i}?", timeout=60)
        return outcome.answer

    async def main() -> list[str]:
        return await asyncio.gather(*(chat(i) for i in range(6)))

    answers = asyncio.run(main())
    assert all(answer.endswith(f"question {i}?") for i, answer in enumerate(answers))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history": [("q",)]}, "history item 1"),
        ({"history": "q"}, "history must be a list"),
        ({"system": 3}, "system message must be a string"),
        ({"passage": "x" * 200_000}, "passage has 200,000 characters"),
        ({"policy": "p9"}, "unknown policy"),
        ({"run": "bad\nname"}, "printable"),
    ],
)
def test_start_validates_like_submit(embedded, options, message):
    client = embedded()
    with pytest.raises(InputError, match=message):
        client.start(**options)


def test_a_live_conversation_can_be_reattached_by_id(embedded):
    client = embedded()
    chat = client.start()
    chat.ask("Who wrote Dune?", timeout=30)

    again = client.live(chat.conversation_id)

    assert again.ask("When?", timeout=30).turn_index == 1
    with pytest.raises(InputError, match="no live conversation"):
        client.live("nope")


def _conversation_reads(client) -> list[str]:
    """Every read of a conversation's row by its id on ``client``'s engine from now on (a listener;
    looking a conversation up by its fingerprint is not a read of it)."""
    from sqlalchemy import event

    seen: list[str] = []

    def count(_conn, _cursor, statement, *_rest) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "WHERE conversation.id =" in statement:
            seen.append(statement)

    event.listen(client.store.engine, "before_cursor_execute", count)
    return seen


def test_a_chat_request_reads_its_conversation_once_before_its_turn(embedded):
    from workers.chat_ask import Ask, send_turn, wait_turn
    from workers.serve import _completion

    client = embedded()
    run = client.live(client.start().conversation_id)  # any live conversation's settings will do
    settings = client.store.state(run.conversation_id).run
    reads = _conversation_reads(client)

    # Given a first question: the conversation is created, not read back
    chat, index = send_turn(Ask(client, settings, None, [], "Who wrote Dune?", None, None, (None, ())))
    assert reads == []
    outcome = wait_turn(chat, index, 30)
    first = _completion(client, outcome, "m", "id", "Who wrote Dune?")

    # When the next request repeats that exchange and asks on
    reads.clear()
    exchanges = [Exchange("Who wrote Dune?", first["choices"][0]["message"]["content"])]
    again, index = send_turn(Ask(client, settings, None, exchanges, "When?", None, None, (None, ())))

    # Then it continued the same conversation, reading it once (it used to be read twice)
    assert (again.conversation_id, index) == (chat.conversation_id, 1)
    assert len(reads) == 1
    # and its answer shows the stored candidates and the decision record
    done = _completion(client, wait_turn(again, index, 30), "m", "id", "When?")
    assert done["peerblend"]["candidates"] and done["peerblend"]["decision"]["decided_by"]


def test_a_conversation_held_open_while_another_client_asks_on_asks_the_turn_after(embedded):
    client = embedded()
    chat = client.start()
    held = client.live(chat.conversation_id)  # its state, handed on: no turn yet

    chat.ask("Who wrote Dune?", timeout=30)  # meanwhile the first question is asked elsewhere

    assert held.ask("When?", timeout=30).turn_index == 1  # the aged state is read again, not trusted


def test_a_new_chat_checks_the_queues_once_and_stores_nothing_when_refused(embedded):
    from pipeline.errors import ServiceUnavailable

    client = embedded()
    checks: list[list[str]] = []
    refuse = {"now": False}

    def queue_check(queues, default):
        checks.append(list(queues))
        if refuse["now"]:
            raise ServiceUnavailable("no worker consumes queue model0")

    before = client.store.list_conversations(limit=1)[1]
    client.queue_check = queue_check
    try:
        # When a new conversation is opened and asked its first question, then a second one
        chat = client.start(system="Be brief.")
        first = chat.send("Who wrote Dune?")
        once = len(checks)
        chat.wait(first, timeout=30)
        chat.send("When was it published?")

        # When the queues have no worker: start refuses before anything is stored
        refuse["now"] = True
        stored = client.store.list_conversations(limit=1)[1]
        with pytest.raises(ServiceUnavailable, match="no worker"):
            client.start(system="Be brief.")
        after = client.store.list_conversations(limit=1)[1]
    finally:
        client.queue_check = None

    # Then the first question cost one check (start's), the follow-up one more
    assert once == 1
    assert len(checks) == 3
    assert stored == before + 1 and after == stored
