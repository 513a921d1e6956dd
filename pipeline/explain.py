"""Why a turn's answer won, in short sentences for people (the web page and ``peerblend show``).

Pure: it reads what a turn stored (its result with the decision record, its reviews and
candidates, as the JSON shapes ``BlendClient.fetch`` returns) and says, one sentence each:
the rule that decided (``decided_by``), the voter groups and the weight they share, whether
and how a tie was broken, whose ballots were dropped and why, and whose answers were left out.
Nothing here ranks again: a sentence only restates what the record holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Why a review gave no ballot, by its status (pipeline.ballot.ParseStatus, the tasks' "timeout",
# "error" and "skipped"); the review's error, when it has one, follows.
DROPPED_BECAUSE = {
    "unparsable": "its reply could not be read as a ranking",
    "copied": "it only repeated the order it was shown",
    "timeout": "it did not finish in time",
    "error": "its reviewer failed",
}
BORDA_STATUSES = ("ok", "no_ballots")  # rankings made by the Borda count (its tie-break applies)
TIE = 1e-9  # scores closer than this are equal (they are sums of weighted points)


def live_label(*, source: str | None, live: bool) -> str:
    """Where a conversation came from, one word for every page and command: "live" (asked a
    question at a time, by the chat page or the API), its dataset source, or "submitted"."""
    if live:
        return "live"
    return source or "submitted"


def explain_turn(
    result: Mapping[str, Any] | None, reviews: Sequence[Mapping[str, Any]] = (), *, rule: bool = True
) -> list[str]:
    """Sentences explaining a stored turn's decision, most important first; [] while it runs.

    ``result``: the stored turn result (``decision`` holds the decision record);
    ``reviews``: the turn's stored reviews (reviewer, status, ranking, error, voters);
    ``rule``: start with the rule that decided (False where it is shown already).
    """
    if not result:
        return []
    decision: Mapping[str, Any] = result.get("decision") or {}
    sentences = []
    if rule and decision.get("decided_by"):
        sentences.append(f"Decided by: {decision['decided_by']}.")
    sentences += voter_sentences(decision, reviews)
    if (tie := tie_sentence(result, reviews)) is not None:
        sentences.append(tie)
    failed: Mapping[str, str] = decision.get("excluded_failed") or {}
    # a member whose server is down fails both ways, with one error: one sentence says so
    both = {
        r.get("reviewer")
        for r in reviews
        if r.get("error") and r.get("error") == failed.get(r.get("reviewer", ""))
    }
    sentences += dropped_sentences([r for r in reviews if r.get("reviewer") not in both])
    for member, why in sorted(failed.items()):
        dropped = " and its ballot dropped" if member in both else ""
        sentences.append(f"{member}'s answer was left out{dropped}: {_short(why)}.")
    if decision.get("finish") == "length":  # pipeline.verdict.answer_finish
        sentences.append("The answer was cut at its token limit (max_tokens): it may end mid-sentence.")
    return sentences


def voter_sentences(decision: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """One sentence per voter group of several reviewers (one judgement, one shared weight), and
    how many independent voters there were. The groups are the decision record's; a rule that
    records none (the learned decision) still ran one review per group: the reviews name them."""
    groups = [list(g) for g in decision.get("voters") or []]
    weights: Mapping[str, float] = decision.get("ballot_weights") or {}
    if not groups:
        groups = [list(r.get("voters") or [r.get("reviewer")]) for r in reviews if r.get("ranking")]
    if not groups:
        return []
    sentences = []
    for group in groups:
        if len(group) < 2:
            continue
        alike = f"{_names(group)} judge alike (same model and review method), so they are one voter"
        total = sum(float(weights.get(r, 0.0)) for r in group)
        if weights:
            sentences.append(
                f"{alike}: their ballot weighs {total:.3g} in all, {total / len(group):.3g} each."
            )
        else:
            sentences.append(f"{alike}: one review counted for them all.")
    n, reviewers = len(groups), sum(len(g) for g in groups)
    counted = f"{n} independent voter{'' if n == 1 else 's'}"
    if sentences:
        return [f"{counted} from {reviewers} reviewers.", *sentences]
    return [f"{counted}, one ballot each."]


def tie_sentence(result: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]]) -> str | None:
    """Whether the Borda count's top two tied, and what broke the tie (more first places, then
    committee order with the policy's preference first: ``pipeline.borda``); None where the
    Borda count did not rank the turn."""
    decision: Mapping[str, Any] = result.get("decision") or {}
    scores: Mapping[str, float] = result.get("scores") or {}
    ranking = [m for m in result.get("ranking") or [] if m in scores]
    borda = decision.get("ranking_status", result.get("status")) in BORDA_STATUSES
    if not (borda and decision.get("ranked", True) and len(ranking) >= 2):
        return None
    first, second = ranking[0], ranking[1]
    lead = float(scores[first]) - float(scores[second])
    if lead > TIE:
        return f"No tie: {first} led with {scores[first]:g} points, {lead:g} ahead of {second}."
    tied = f"{first} and {second} tied at {scores[first]:g} points"
    if "prior" in decision:  # the prior's ballot counts for first places too; it is not stored
        return f"{tied}; the tie-break (more first places, then committee order) put {first} first."
    firsts = first_places(reviews, decision.get("ballot_weights") or {}, ranking)
    if firsts[first] - firsts[second] > TIE:
        return f"{tied}; {first} went first on more first places ({firsts[first]:g} to {firsts[second]:g})."
    return f"{tied} and first places; committee order (the policy's preference first) put {first} first."


def first_places(
    reviews: Sequence[Mapping[str, Any]], weights: Mapping[str, float], pool: Sequence[str]
) -> dict[str, float]:
    """Each member of ``pool``: the weight of the counted ballots that rank it best among ``pool``."""
    firsts = dict.fromkeys(pool, 0.0)
    for review in reviews:
        top = next((m for m in review.get("ranking") or [] if m in firsts), None)
        if top is None:
            continue
        # records stored before ballot weights were have none: every ballot then weighed 1
        firsts[top] += float(weights.get(review.get("reviewer", ""), 0.0)) if weights else 1.0
    return firsts


def dropped_sentences(reviews: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per review that gave no ballot (a skipped review, with nothing to rank, is not
    a dropped ballot)."""
    sentences = []
    for review in reviews:
        status = str(review.get("status", ""))
        if review.get("ranking") or status == "skipped":
            continue
        why = DROPPED_BECAUSE.get(status, f"its status was {status or 'unknown'}")
        error = review.get("error")
        sentences.append(
            f"{review.get('reviewer')}'s ballot was dropped: {why}"
            + (f" ({_short(error)})." if error else ".")
        )
    return sentences


def _names(members: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    members = list(members)
    return members[0] if len(members) == 1 else f"{', '.join(members[:-1])} and {members[-1]}"


def _short(text: object, most: int = 160) -> str:
    """``text`` on one line, cut at ``most`` characters (errors can carry tracebacks)."""
    line = " ".join(str(text).split())
    return line if len(line) <= most else line[: most - 1] + "…"
