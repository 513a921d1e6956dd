"""The verdict of a turn, as pure code: from candidates and ballots to the answer.

Words: a turn's ``TurnRoles`` say who works on it (the policy's choice), its ``Standings`` are
the ranking of its candidates, and its *decision* is only the record it stores
(``Verdict.record``, the result row's ``decision`` column).

``decide_turn`` takes a turn's ``TurnInputs`` and ranks the usable candidates as the run's
method ranks a reviewed turn (``Method.rank``: Borda over the reviews, the learned decision,
or "max logits" over the pairwise judgements; a turn without a review keeps the policy's
order), picks the best, or names the texts the aggregator should fuse (``pipeline.fusion``),
and builds everything the turn stores: status, ranking, scores, timings and the decision
record. The worker then fuses through a backend if asked (``with_fusion``), stores the
verdict, and advances the policy.

Statuses: those of ``pipeline.aggregate.Standings`` ("ok", "single", "no_ballots",
"no_candidates", "unranked"), "learned" and "prior" (the learned decision ranked, or left
the turn's question bucket to the member prior: ``pipeline.learned``), plus "fused" (the
aggregator's answer) and "fusion_failed" (the aggregator failed: the best candidate, with
the error). Every decision record says in one sentence which rule decided (``decided_by``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import fusion
from pipeline.aggregate import Standings, top_k_texts
from pipeline.backend import ran_out
from pipeline.learned import LearnedModel
from pipeline.method import Rules, by_borda
from pipeline.plan import RunConfig
from pipeline.policy import TurnRoles
from pipeline.prior import MemberPrior, prior_record
from pipeline.records import CandidateRecord, Judgement, ReviewRecord, TurnContext
from pipeline.weights import ReviewerWeights


@dataclass(frozen=True)
class Verdict:
    """What a turn decided. ``to_fuse``: the texts for the aggregator, best first (empty: no fusion)."""

    ranked: Standings
    answer: str
    chosen: str | None
    status: str
    record: dict[str, Any]  # the decision record stored with the turn
    timings: dict[str, float] = field(default_factory=dict)
    to_fuse: tuple[str, ...] = ()


@dataclass(frozen=True)
class TurnInputs:
    """What a turn is decided from: the turn, how its conversation runs and who worked on it
    this turn, and what its stages returned (reviews for a peer turn, judgements for a
    pairwise one)."""

    context: TurnContext
    run: RunConfig
    roles: TurnRoles  # who worked this turn (``pipeline.policy.who_works``)
    candidates: Sequence[CandidateRecord]
    reviews: Sequence[ReviewRecord] = ()
    judgements: Sequence[Judgement] = ()

    @property
    def calls(self) -> list[CandidateRecord | ReviewRecord | Judgement]:
        """Every record of a model call the stages made, answers first."""
        return [*self.candidates, *self.reviews, *self.judgements]


def decide_turn(
    inputs: TurnInputs,
    *,
    committee_order: Sequence[str],
    weights: ReviewerWeights,
    exclude_self: bool = False,
    voters: Mapping[str, str] | None = None,
    prior: MemberPrior | None = None,
    learned: LearnedModel | None = None,
    now: float,
) -> Verdict:
    """Rank, then select (or name the texts to fuse).

    ``committee_order``: every member, the policy's preference first (the tie-break).
    ``voters``: reviewer -> judgement key: reviewers with one key count as one voter.
    ``prior``: the member prior, added to the Borda count as one more ballot.
    ``learned``: the committee's learned decision (``pipeline.learned``): it ranks a reviewed
    peer turn instead of the Borda count.
    ``now``: epoch seconds at the end of ranking (timings are measured up to it).
    """
    roles, run, candidates = inputs.roles, inputs.run, inputs.candidates
    order = [*roles.preference, *(m for m in committee_order if m not in roles.preference)]
    rules = Rules(order, weights, exclude_self, voters, prior, learned, inputs.context.passage)
    ranked, rule = _rank(inputs, rules)
    record = {
        **roles.to_json(),  # the record starts with who worked (``shortlist`` reads them back)
        "top_k": run.top_k,
        "excluded_failed": ranked.excluded,
        "ballots": ranked.ballots_used,
        "ranking_status": ranked.status,
        "fusion_error": None,
        "weights": dict(weights.weights or {}),
        "weights_note": weights.note,
        **voter_record(ranked, prior),
        "decided_by": rule.get("decided_by") or decided_by(ranked, rules, roles, run),
        **{k: v for k, v in rule.items() if k != "decided_by"},
    }
    timings = stage_timings(inputs.context, candidates, [*inputs.reviews, *inputs.judgements], now)
    best = top_k_texts(ranked, candidates, 1)
    to_fuse = fusion.texts_to_fuse(ranked, candidates, top_k=run.top_k, fuses=run.fuses)
    return Verdict(
        ranked=ranked,
        answer=best[0] if best else "",
        chosen=ranked.chosen,
        status=ranked.status,
        record=record,
        timings=timings,
        to_fuse=to_fuse,
    )


def _rank(inputs: TurnInputs, rules: Rules) -> tuple[Standings, dict[str, Any]]:
    """The ranking (the method's for a reviewed turn; else the given order) and the rule's own
    record fields."""
    if not inputs.roles.ranked:
        return by_borda(inputs.candidates, inputs.reviews, rules), {}
    method = inputs.run.variant
    return method.rank(inputs.candidates, inputs.reviews, inputs.judgements, rules)


def decided_by(ranked: Standings, rules: Rules, roles: TurnRoles, run: RunConfig) -> str:
    """One sentence: the rule that decided the turn (the learned decision says its own)."""
    if ranked.status == "no_candidates":
        return "nothing: every member failed"
    if not roles.ranked:
        return f"no review this turn ({roles.reason}): " + (
            "its one answer" if ranked.status == "single" else "the policy's order"
        )
    if ranked.status == "single":
        return "the only usable answer"
    return run.variant.decided_by(ranked, rules)


def voter_record(ranked: Standings, prior: MemberPrior | None) -> dict[str, Any]:
    """Who voted as whom, what each ballot weighed, and the member prior, for the decision record."""
    record: dict[str, Any] = {
        "voters": [list(group) for group in ranked.voters],
        "independent_voters": len(ranked.voters),
        "ballot_weights": {r: round(w, 6) for r, w in ranked.ballot_weights.items()},
    }
    return {**record, **prior_record(ranked.ranking, prior)}


def with_fusion(verdict: Verdict, fused: str | None, *, error: str | None = None) -> Verdict:
    """The verdict after the aggregator ran: its answer, or the best candidate and the error."""
    if not verdict.to_fuse:
        return verdict
    if error is None and fused:
        return replace(verdict, answer=fused, chosen=None, status="fused")
    why = error or "empty fused answer"
    return replace(verdict, status="fusion_failed", record={**verdict.record, "fusion_error": why[:500]})


def answer_finish(verdict: Verdict, candidates: Sequence[CandidateRecord]) -> str:
    """How the turn's answer ended, as a chat client reads it (``finish_reason``): "length" when
    the text given ran into its max_new_tokens (the fused text, or the chosen member's), else "stop"."""
    if verdict.status == "fused":
        return "length" if ran_out(verdict.answer) else "stop"
    chosen = next((c for c in candidates if c.member == verdict.chosen), None)
    return "length" if chosen is not None and chosen.ran_out else "stop"


def stage_timings(
    context: TurnContext, candidates: Sequence[CandidateRecord], reviews: Sequence[Any], now: float
) -> dict[str, float]:
    """Stage durations in seconds, from the turn's send time and each record's finish time.

    ``aggregate_s`` and ``total_s`` are completed by ``finish_timings`` once the
    turn is stored; until then they run to ``now``.
    """
    generated = max((c.finished_at for c in candidates), default=context.enqueued_at)
    reviewed = max((r.finished_at for r in reviews), default=generated)
    return {
        "generation_s": max(0.0, generated - context.enqueued_at),
        "review_s": max(0.0, reviewed - generated),
        "aggregate_s": max(0.0, now - reviewed),
        "ranking_s": max(0.0, now - reviewed),
        "total_s": max(0.0, now - context.enqueued_at),
        "generation_model_s": max((c.seconds for c in candidates), default=0.0),
        "review_model_s": max((r.seconds for r in reviews), default=0.0),
        "model_calls": float(len(candidates) + len(reviews)),
    }


def finish_timings(timings: Mapping[str, float], *, ranked_at: float, now: float) -> dict[str, float]:
    """Extend ``aggregate_s`` and ``total_s`` to ``now`` (after fusion), keeping the rest."""
    extra = max(0.0, now - ranked_at)
    return {
        **timings,
        "aggregate_s": timings["aggregate_s"] + extra,
        "total_s": timings["total_s"] + extra,
    }
