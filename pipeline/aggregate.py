"""From candidates and reviews to the turn's decision: Borda, then select or fuse.

Honest voters. Reviewers whose judgement is the same function count as one voter:
same backend, model, device, dtype and backend options, same review method and the
same review prompt (``judgement_key``; likelihood prompts carry nothing of the
member, a ranking prompt differs only by its token limit). Two likelihood
reviewers on one model give identical scores; two ranking reviewers on one model
are one judge seen through two shuffles. Each such group shares one ballot's
weight: a ballot counts its reviewer's weight divided by the number of ballots its
group gave this turn (``voter_weights``), so a group weighs the mean of its
members' weights, and a member that failed leaves its weight to the others.

Each judgement computed once. A turn runs one review per group (``review_groups``:
the group's first reviewer in committee order reviews, its ``ReviewRecord.voters``
names the group), and that one ballot weighs the sum of its voters' shares: the
mean of the group's weights, what its members' identical ballots weighed together
(``ballot_weights``); only an exact tie (two identical answers), which each member's
shuffle ordered its own way, is now ordered by one shuffle (docs/results/review-groups.md).
With ``exclude_self`` a group's ballot gives no points to any member of the group.
Records cast for one reviewer (stored before groups were, or from a committee that
reviews per reviewer) count as before.

Member prior (``MemberPrior``). When given, the prior is one more ballot: the
turn's candidates ordered by their member's calibrated quality (mean token F1 on a
calibration run), best first, with the prior's own weight (``pipeline.weights``:
its calibrated trust when reviewer weights are calibrated, else 1). With m
candidates, voter groups g of reviewers r with weights w_r, candidate i scores
``B_i = sum_g sum_(r in g) (w_r / |g|) * points_r(i) + w_prior * (m - rank_prior(i))``
(points as in ``pipeline.borda``: m − position; a member the prior does not
know is unranked by it and gets the partial-ballot share).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.borda import Ballot, borda_order, borda_scores, first_places
from pipeline.committee import Committee, Member
from pipeline.prior import PRIOR_VOTER, MemberPrior
from pipeline.records import CandidateRecord, ReviewRecord


@dataclass(frozen=True)
class Standings:
    """The outcome of ranking a turn's candidates (``Verdict.ranked``). Not a "decision": that word
    names only the record a turn stores (``Verdict.record``, the result row's ``decision``).

    ``ranking``: usable candidates (member names) best first. ``status``:
    "ok" (ranked by ballots), "single" (one usable candidate, nothing to rank),
    "no_ballots" (no reviewer gave a ballot: the prior if given, else committee order, decides),
    "no_candidates" (every member failed), "unranked" (no review this turn: the
    given order decides), "prior" (the member prior alone: ``decide_by_prior``).
    """

    ranking: tuple[str, ...]
    scores: dict[str, float]
    status: str
    ballots_used: int
    excluded: dict[str, str] = field(default_factory=dict)  # member -> why
    voters: tuple[tuple[str, ...], ...] = ()  # reviewers whose ballots counted, one group per voter
    ballot_weights: dict[str, float] = field(default_factory=dict)  # what each counted ballot weighed

    @property
    def chosen(self) -> str | None:
        return self.ranking[0] if self.ranking else None


def usable(candidates: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """Candidates that may be ranked: no error and some text."""
    return [c for c in candidates if c.ok]


def excluded(candidates: Sequence[CandidateRecord]) -> dict[str, str]:
    return {c.member: c.error or "empty answer" for c in candidates if not c.ok}


def judgement_key(member: Member) -> str:
    """What a reviewer's judgement is a function of; equal keys vote as one (see the module docstring)."""
    parts: dict[str, object] = {
        "backend": member.backend,
        "model": member.model,
        "device": member.device,
        "dtype": member.dtype,
        "options": member.options,
        "review_method": member.review_method,
    }
    if member.review_method == "ranking":
        parts["review_max_new_tokens"] = member.generation.review_max_new_tokens
    if member.review_method == "consistency":  # it samples answers the way the member answers
        parts["generation"] = member.generation.model_dump()
    return json.dumps(parts, sort_keys=True, default=str)


def judgement_keys(committee: Committee) -> dict[str, str]:
    """``judgement_key`` of every reviewer of the committee."""
    return {m.name: judgement_key(m) for m in committee.members if "reviewer" in m.roles}


def voter_groups(reviewers: Sequence[str], keys: Mapping[str, str] | None) -> tuple[tuple[str, ...], ...]:
    """``reviewers`` grouped by judgement key, in first-seen order; a reviewer without a key is alone."""
    groups: dict[str, list[str]] = {}
    for reviewer in dict.fromkeys(reviewers):
        groups.setdefault((keys or {}).get(reviewer, f"\0{reviewer}"), []).append(reviewer)
    return tuple(tuple(group) for group in groups.values())


def voter_weights(
    groups: Sequence[Sequence[str]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Each reviewer's ballot weight: its own weight (default 1) divided by its group's size."""
    return {r: (weights or {}).get(r, 1.0) / len(group) for group in groups for r in group}


def ballot_weights(
    ballots: Sequence[Ballot], groups: Sequence[Sequence[str]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Each ballot's weight: the sum of its voters' shares (``voter_weights``); ``groups`` cover them all."""
    shares = voter_weights(groups, weights)
    return {b.reviewer: sum(shares[v] for v in b.selves) for b in ballots}


def review_groups(reviewers: Sequence[str], committee: Committee) -> tuple[tuple[str, ...], ...]:
    """``reviewers`` of a turn by judgement key, each group in committee order, in the order of their
    first members: each group's first reviewer computes the group's one judgement.

    Every kind of group is reviewed once, ranking and consistency groups too: their
    judgement depends on a seed drawn from the reviewer's name (the shuffle shown, the
    samples drawn), so two members of one group would give two draws of one judge, and
    the Borda count already counts them as one voter. The draw the first member gets is
    the group's honest single judgement; more draws would cost a review each and, split
    into shares, only average that judge's position bias rather than add a voter.
    """
    order = {m.name: i for i, m in enumerate(committee.members)}
    ordered = sorted(dict.fromkeys(reviewers), key=lambda r: order.get(r, len(order)))
    return voter_groups(ordered, judgement_keys(committee))


def decide(
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    *,
    committee_order: Sequence[str],
    weights: Mapping[str, float] | None = None,
    exclude_self: bool = False,
    voters: Mapping[str, str] | None = None,
    prior: MemberPrior | None = None,
) -> Standings:
    """Rank the usable candidates by the Borda count of the reviews' ballots.

    Ballots are taken only from reviews that produced one; a ballot's members
    outside the usable candidates are ignored. Candidates keep committee order
    for the tie-break (see ``pipeline.borda``). ``voters``: reviewer -> judgement
    key (``judgement_keys``); None counts every reviewer as its own voter.
    ``prior``: adds the member prior's ballot (a ranked turn without any
    reviewer's ballot is then ranked by the prior alone).
    """
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    dropped = excluded(candidates)
    if not pool:
        return Standings((), {}, "no_candidates", 0, dropped)
    ballots = [Ballot(r.reviewer, r.ranking, r.voters) for r in reviews if r.ranking]
    if len(pool) == 1:
        return Standings(tuple(pool), {pool[0]: 0.0}, "single", len(ballots), dropped)
    if not reviews:
        return Standings(tuple(pool), dict.fromkeys(pool, 0.0), "unranked", 0, dropped)
    groups = voter_groups([v for b in ballots for v in b.selves], voters)
    counted = ballot_weights(ballots, groups, weights)
    status = "ok" if ballots else "no_ballots"
    if prior is not None:
        ballots.append(prior.ballot(pool))
        counted[PRIOR_VOTER] = prior.weight
    scores = borda_scores(ballots, pool, weights=counted, exclude_self=exclude_self)
    firsts = first_places(ballots, pool, weights=counted, exclude_self=exclude_self)
    ranking = borda_order(pool, scores, firsts)
    used = len(ballots) - (prior is not None)
    return Standings(tuple(ranking), scores, status, used, dropped, groups, counted)


def decide_by_prior(
    candidates: Sequence[CandidateRecord], prior: MemberPrior, *, committee_order: Sequence[str]
) -> Standings:
    """Rank the usable candidates by the member prior alone (status "prior"); ties keep committee order."""
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    dropped = excluded(candidates)
    if len(pool) < 2:
        return Standings(
            tuple(pool), dict.fromkeys(pool, 0.0), "single" if pool else "no_candidates", 0, dropped
        )
    ballot = prior.ballot(pool)
    ranking = [*ballot.ranking, *(m for m in pool if m not in ballot.ranking)]
    scores = {m: float(prior.quality.get(m, 0.0)) for m in pool}
    return Standings(tuple(ranking), scores, "prior", 0, dropped)


def decide_single(candidates: Sequence[CandidateRecord], member: str) -> Standings:
    """``member``'s answer, as a single-model run gives it (status "single"; none if it failed)."""
    dropped = excluded(candidates)
    if member not in {c.member for c in usable(candidates)}:
        return Standings((), {}, "no_candidates", 0, dropped)
    return Standings((member,), {member: 0.0}, "single", 0, dropped)


def top_k_texts(decision: Standings, candidates: Sequence[CandidateRecord], k: int) -> list[str]:
    """The texts of the best ``k`` usable candidates (fewer if fewer exist), best first."""
    by_member = {c.member: c.text for c in usable(candidates)}
    return [by_member[m] for m in decision.ranking[:k]]
