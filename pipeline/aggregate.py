"""From candidates and reviews to the turn's decision: Borda, then select or fuse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.borda import Ballot, borda_ranking, borda_scores
from pipeline.pairwise import Judgement, max_logits, pairwise_ranking
from pipeline.records import CandidateRecord, ReviewRecord


@dataclass(frozen=True)
class Decision:
    """The outcome of ranking a turn's candidates.

    ``ranking``: usable candidates (member names) best first. ``status``:
    "ok" (ranked by ballots), "single" (one usable candidate, nothing to rank),
    "no_ballots" (no reviewer gave a ballot: committee order decides),
    "no_candidates" (every member failed), "unranked" (no review this turn: the
    given order decides).
    """

    ranking: tuple[str, ...]
    scores: dict[str, float]
    status: str
    ballots_used: int
    excluded: dict[str, str] = field(default_factory=dict)  # member -> why

    @property
    def chosen(self) -> str | None:
        return self.ranking[0] if self.ranking else None


def usable(candidates: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """Candidates that may be ranked: no error and some text."""
    return [c for c in candidates if c.ok]


def excluded(candidates: Sequence[CandidateRecord]) -> dict[str, str]:
    return {c.member: c.error or "empty answer" for c in candidates if not c.ok}


def decide(
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    *,
    committee_order: Sequence[str],
    weights: Mapping[str, float] | None = None,
    exclude_self: bool = False,
) -> Decision:
    """Rank the usable candidates by the Borda count of the reviews' ballots.

    Ballots are taken only from reviews that produced one; a ballot's members
    outside the usable candidates are ignored. Candidates keep committee order
    for the tie-break (see ``pipeline.borda``).
    """
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    dropped = excluded(candidates)
    if not pool:
        return Decision((), {}, "no_candidates", 0, dropped)
    ballots = [Ballot(r.reviewer, r.ranking) for r in reviews if r.ranking]
    if len(pool) == 1:
        return Decision(tuple(pool), {pool[0]: 0.0}, "single", len(ballots), dropped)
    if not reviews:
        return Decision(tuple(pool), dict.fromkeys(pool, 0.0), "unranked", 0, dropped)
    scores = borda_scores(ballots, pool, weights=weights, exclude_self=exclude_self)
    ranking = borda_ranking(ballots, pool, weights=weights, exclude_self=exclude_self)
    return Decision(tuple(ranking), scores, "ok" if ballots else "no_ballots", len(ballots), dropped)


def top_k_texts(decision: Decision, candidates: Sequence[CandidateRecord], k: int) -> list[str]:
    """The texts of the best ``k`` usable candidates (fewer if fewer exist), best first."""
    by_member = {c.member: c.text for c in usable(candidates)}
    return [by_member[m] for m in decision.ranking[:k]]


def decide_pairwise(
    candidates: Sequence[CandidateRecord], judgements: Sequence[Judgement], *, committee_order: Sequence[str]
) -> Decision:
    """Rank the usable candidates by "max logits" over the judged pairs."""
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    dropped = excluded(candidates)
    if len(pool) < 2:
        status = "single" if pool else "no_candidates"
        return Decision(tuple(pool), dict.fromkeys(pool, 0.0), status, 0, dropped)
    judged = [j for j in judgements if j.p_first is not None]
    scores = max_logits(judged, pool)
    ranking = pairwise_ranking(scores, pool)
    return Decision(tuple(ranking), scores, "ok" if judged else "no_ballots", len(judged), dropped)
