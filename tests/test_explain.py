"""pipeline.explain: the sentences that say why a turn's answer won (pure, no services)."""

from __future__ import annotations

from typing import Any

from pipeline.explain import explain_turn, live_label


def _result(**decision: Any) -> dict[str, Any]:
    scores = decision.pop("scores", {"m0": 4.0, "m1": 3.0, "m2": 2.0})
    ranking = decision.pop("ranking", list(scores))
    return {
        "answer": "Frank Herbert.",
        "chosen": ranking[0],
        "status": "ok",
        "ranking": ranking,
        "scores": scores,
        "decision": {"ranked": True, "ranking_status": "ok", **decision},
    }


def _review(
    reviewer: str, ranking: list[str], status: str = "ok", error: str | None = None
) -> dict[str, Any]:
    return {"reviewer": reviewer, "ranking": ranking, "status": status, "error": error}


def test_nothing_to_explain_while_a_turn_runs() -> None:
    assert explain_turn(None) == []


def test_the_rule_and_independent_voters() -> None:
    result = _result(
        decided_by="Borda count of 3 voter(s), uniform",
        voters=[["m0"], ["m1"], ["m2"]],
        ballot_weights={"m0": 1.0, "m1": 1.0, "m2": 1.0},
    )

    sentences = explain_turn(result, [_review("m0", ["m0", "m1", "m2"])])

    assert sentences[:3] == [
        "Decided by: Borda count of 3 voter(s), uniform.",
        "3 independent voters, one ballot each.",
        "No tie: m0 led with 4 points, 1 ahead of m1.",
    ]


def test_a_voter_group_shares_one_weight() -> None:
    # Given m0 and m2 judging with one model and method: one review cast for both, weighing 1
    result = _result(voters=[["m0", "m2"], ["m1"]], ballot_weights={"m0": 1.0, "m1": 1.0})

    sentences = explain_turn(result, [])

    assert "2 independent voters from 3 reviewers." in sentences
    assert (
        "m0 and m2 judge alike (same model and review method), so they are one voter: "
        "their ballot weighs 1 in all, 0.5 each."
    ) in sentences


def test_a_tie_broken_by_first_places() -> None:
    # Given m1 and m0 tied on points, m1 ranked first by the heavier ballot
    result = _result(scores={"m1": 3.0, "m0": 3.0, "m2": 0.0}, ballot_weights={"a": 2.0, "b": 1.0})
    reviews = [_review("a", ["m1", "m0", "m2"]), _review("b", ["m0", "m2", "m1"])]

    sentences = explain_turn(result, reviews)

    assert "m1 and m0 tied at 3 points; m1 went first on more first places (2 to 1)." in sentences


def test_a_tie_broken_by_committee_order() -> None:
    result = _result(scores={"m0": 3.0, "m1": 3.0, "m2": 0.0}, ballot_weights={"a": 1.0, "b": 1.0})
    reviews = [_review("a", ["m0", "m1", "m2"]), _review("b", ["m1", "m0", "m2"])]

    sentences = explain_turn(result, reviews)

    assert (
        "m0 and m1 tied at 3 points and first places; committee order (the policy's preference first) "
        "put m0 first."
    ) in sentences


def test_no_tie_sentence_where_borda_did_not_rank() -> None:
    reused = _result(ranked=False, decided_by="no review this turn (p2: even turn): the policy's order")
    learned = _result(ranking_status="learned", scores={"m0": 0.5, "m1": 0.5})

    assert not [s for s in explain_turn(reused) if "tie" in s.lower()]
    assert not [s for s in explain_turn(learned) if "tie" in s.lower()]


def test_dropped_ballots_and_failed_members_say_why() -> None:
    down = "BackendError: connection refused"
    result = _result(excluded_failed={"m3": down})
    reviews = [
        _review("m1", [], status="unparsable", error="no labels in 'I think A'"),
        _review("m2", [], status="copied"),
        _review("m3", [], status="error", error=down),
        _review("m4", [], status="skipped"),
    ]

    sentences = explain_turn(result, reviews)

    assert (
        "m1's ballot was dropped: its reply could not be read as a ranking (no labels in 'I think A')."
        in sentences
    )
    assert "m2's ballot was dropped: it only repeated the order it was shown." in sentences
    assert f"m3's answer was left out and its ballot dropped: {down}." in sentences
    assert not [s for s in sentences if s.startswith("m4")], "a skipped review dropped no ballot"


def test_an_answer_cut_at_its_token_limit_says_so() -> None:
    cut = explain_turn(_result(finish="length"), rule=False)
    ended = explain_turn(_result(finish="stop"), rule=False) + explain_turn(_result(), rule=False)

    assert any("cut at its token limit" in s for s in cut)
    assert not any("token limit" in s for s in ended)


def test_one_label_for_live_conversations() -> None:
    assert live_label(source=None, live=True) == "live"
    assert live_label(source="doqa", live=False) == "doqa"
    assert live_label(source=None, live=False) == "submitted"


def test_voter_groups_from_the_reviews_where_the_rule_records_none() -> None:
    # Given the learned decision (no voters in its record) over one review cast for two reviewers
    result = _result(ranking_status="learned", voters=[], ballot_weights={}, decided_by="learned (prior)")
    reviews = [
        {**_review("a", ["m0", "m1"]), "voters": ["a"]},
        {**_review("g1", ["m1", "m0"]), "voters": ["g1", "g2"]},
    ]

    sentences = explain_turn(result, reviews)

    assert "2 independent voters from 3 reviewers." in sentences
    assert "g1 and g2 judge alike (same model and review method), so they are one voter: " in " ".join(
        sentences
    )
    assert "one review counted for them all." in " ".join(sentences)


def test_peerblend_show_says_live_and_why() -> None:
    from io import StringIO

    from rich.console import Console

    from pipeline.outcomes import StoredConversation, StoredTurn
    from workers.report import conversation_header, print_turn

    # Given a live conversation's stored turn whose m3 failed both ways
    result = {
        **_result(decided_by="Borda count of 3 voter(s), uniform", excluded_failed={"m3": "down"}),
        "timings": {"generation_s": 1.0, "review_s": 1.0, "aggregate_s": 0.0, "total_s": 2.0},
    }
    candidate = {"member": "m0", "text": "Frank Herbert.", "error": None, "seconds": 0.1}
    review = {
        **_review("m3", [], status="error", error="down"),
        "method": "ranking",
        "shown_order": [],
        "raw": "",
    }
    turn = StoredTurn(0, "Who wrote Dune?", [], result, [candidate], [{**review, "seconds": 0.0}])
    stored = StoredConversation("c1", None, None, "web", "peer", "full", 1, None, [turn])
    out = StringIO()
    console = Console(file=out, width=300)

    console.print(conversation_header(stored, live=True))
    print_turn(console, turn)

    # Then it says "live" as the page does, and the page's sentences, the rule once
    printed = out.getvalue()
    assert "conversation c1 (live;" in printed and "submitted" not in printed
    assert "why: No tie: m0 led with 4 points, 1 ahead of m1." in printed
    assert "why: m3's answer was left out and its ballot dropped: down." in printed
    assert printed.count("Borda count of 3 voter(s), uniform") == 1
