"""What the conversation page shows, computed from what a conversation stored: each turn's
candidates with their places, ballots with the labels their reviewers saw, Borda bars, stage
timings and the explanation of its decision (``pipeline.explain``)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import InputError
from pipeline.explain import explain_turn, live_label
from pipeline.plan import method_named
from pipeline.service.canvas import final_task_id
from pipeline.service.client import BlendClient, StoredConversation, StoredTurn

STAGES = (("generation_s", "generate"), ("review_s", "review"), ("aggregate_s", "aggregate"))
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def conversation_view(
    client: BlendClient, conversation_id: str, flower_url: str | None
) -> dict[str, Any] | None:
    """What the conversation page shows; None when there is no such conversation."""
    try:
        stored = client.fetch(conversation_id)
    except InputError:
        return None
    row = client.store.conversation(conversation_id)
    attempts = client.store.attempts(conversation_id)
    if row is None:
        return None
    done = sum(t.result is not None for t in stored.turns)
    turns = [
        turn_view(t, stored, attempt=attempts.get(t.turn_index, 1), flower_url=flower_url)
        for t in stored.turns
    ]
    return {
        "conversation": row,
        "label": live_label(source=row.source, live=row.live),
        "turns": turns,
        "n_turns": len(stored.turns),
        "stored": done,
    }


def turn_view(
    turn: StoredTurn, conversation: StoredConversation, *, attempt: int, flower_url: str | None
) -> dict[str, Any]:
    """One turn for the page: numbered from 1, its bars and links computed."""
    result = turn.result or {}
    decision = result.get("decision") or {}
    ranked = bool(decision.get("ranked", bool(decision.get("reviewers"))))
    variant = method_named(conversation.method)
    one_member = variant is not None and variant.takes_member  # a baseline of one member: never reviewed
    flower = None
    if flower_url:
        task = final_task_id(conversation.id, turn.turn_index, max(attempt, 1))
        flower = {
            "task": f"{flower_url}/task/{task}",
            "tasks": f"{flower_url}/tasks",
            "search": f"conversation={conversation.id} turn={turn.turn_index + 1}",
        }
    return {
        "index": turn.turn_index,
        "number": turn.turn_index + 1,
        "question": turn.question,
        "gold": turn.gold,
        "result": turn.result,
        "decision": decision,
        "ranked": ranked,
        "unranked": "not ranked (single member)" if one_member else "not ranked (reused)",
        "candidates": candidate_cards(turn, result),
        "ballots": [ballot_view(review, decision) for review in turn.reviews],
        "scores": score_bars(result) if ranked else [],
        "timings": timing_bar(result.get("timings") or {}),
        "flower": flower,
        "explanation": explain_turn(turn.result, turn.reviews),
    }


def candidate_cards(turn: StoredTurn, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every candidate with its place in the ranking (1 = best) and whether it was chosen."""
    ranking, scores = list(result.get("ranking") or []), result.get("scores") or {}
    return [
        {
            **c,
            "chosen": c["member"] == result.get("chosen"),
            "place": ranking.index(c["member"]) + 1 if c["member"] in ranking else None,
            "score": scores.get(c["member"]),
        }
        for c in turn.candidates
    ]


def ballot_view(review: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """A ballot with the labels its reviewer saw: ``shown`` and ``order`` (best first) as [(label, member)],
    and ``voters``: the reviewers it was cast for (a voter group's one review; the reviewer alone on
    rows stored before groups were)."""
    shown = list(zip(LABELS, review.get("shown_order") or [], strict=False))
    label = {member: letter for letter, member in shown}
    order = [(label.get(member, "?"), member) for member in review.get("ranking") or []]
    weight = (decision.get("ballot_weights") or {}).get(review["reviewer"])
    voters = review.get("voters") or [review["reviewer"]]
    return {**review, "shown": shown, "order": order, "weight": weight, "voters": voters}


def score_bars(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Borda scores in ranking order, each with a bar width in percent of the largest magnitude."""
    scores: dict[str, float] = result.get("scores") or {}
    order = [m for m in result.get("ranking") or [] if m in scores] + [
        m for m in scores if m not in (result.get("ranking") or [])
    ]
    top = max((abs(v) for v in scores.values()), default=0.0) or 1.0
    return [
        {
            "member": m,
            "score": scores[m],
            "width": 100 * abs(scores[m]) / top,
            "chosen": m == result.get("chosen"),
        }
        for m in order
    ]


def timing_bar(timings: dict[str, float]) -> dict[str, Any]:
    """The stages as segments of one bar (percent of their sum), and the turn's total seconds."""
    seconds = [(label, float(timings.get(key, 0.0))) for key, label in STAGES]
    whole = sum(s for _, s in seconds) or 1.0
    segments = [{"stage": label, "seconds": s, "width": 100 * s / whole} for label, s in seconds]
    return {"segments": segments, "total": float(timings.get("total_s", sum(s for _, s in seconds)))}
