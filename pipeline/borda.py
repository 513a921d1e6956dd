"""Borda count over reviewers' ballots, with a deterministic tie-break.

Scoring rule (m = number of candidates in the turn):
- a candidate a ballot ranks in position p (1 = best) gets ``m - p`` points;
- a *partial* ballot ranks only r < m candidates; each unranked candidate gets
  the mean of the points left for positions r+1..m, i.e. ``(m - r - 1) / 2``.
  Every ballot, complete or partial, thus hands out the same total,
  m(m-1)/2 points, and a reviewer cannot gain weight by ranking fewer;
- ballot labels that are not candidates of the turn are ignored, and a ballot
  that ranks no candidate of the turn counts for nothing;
- each ballot's points are multiplied by its reviewer's weight (default 1).
  With ``exclude_self=True`` a reviewer's ballot gives no points to the
  reviewer's own candidate (that candidate is treated as unranked *and* gets 0;
  the others keep their positions among themselves); a ballot cast for a group
  of reviewers (``Ballot.voters``) gives none to any of their candidates.

Tie-break (documented, deterministic): higher total first; then more
(weighted) first places; then the candidate's position in ``candidates``
(the committee's order). Totals and first places are compared at 1e-9
(``TIE_DIGITS``): a voter group's shares (1/3 + 1/3 + 1/3) must tie exactly where
whole ballots would. ``borda_order`` is that order, and the one production uses
(``pipeline.aggregate.decide``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TIE_DIGITS = 9  # decimals compared: sums of weight shares differ from whole weights by ~1e-16


@dataclass(frozen=True)
class Ballot:
    """A reviewer's ranking of candidates, best first, by candidate id (member name).

    ``voters``: the reviewers this one ballot is cast for (one judgement computed once for a
    group of reviewers: ``pipeline.aggregate``); empty: the reviewer alone.
    """

    reviewer: str
    ranking: tuple[str, ...]
    voters: tuple[str, ...] = ()

    @property
    def selves(self) -> tuple[str, ...]:
        """Whose own candidates this ballot votes on (``exclude_self`` gives them no points)."""
        return self.voters or (self.reviewer,)


def ballot_points(ranking: Sequence[str], candidates: Sequence[str]) -> dict[str, float]:
    """Points one ballot gives each candidate (see the module docstring)."""
    pool = list(dict.fromkeys(c for c in ranking if c in candidates))
    m, r = len(candidates), len(pool)
    if r == 0:
        return dict.fromkeys(candidates, 0.0)
    points = {c: (m - r - 1) / 2 for c in candidates}
    for position, candidate in enumerate(pool, start=1):
        points[candidate] = float(m - position)
    return points


def borda_scores(
    ballots: Sequence[Ballot],
    candidates: Sequence[str],
    *,
    weights: Mapping[str, float] | None = None,
    exclude_self: bool = False,
) -> dict[str, float]:
    """Summed Borda points per candidate; one entry per candidate, higher is better."""
    totals = dict.fromkeys(candidates, 0.0)
    for ballot in ballots:
        weight = 1.0 if weights is None else weights.get(ballot.reviewer, 1.0)
        pool = [c for c in candidates if not (exclude_self and c in ballot.selves)]
        points = ballot_points([c for c in ballot.ranking if c in pool], pool)
        for candidate, value in points.items():
            totals[candidate] += weight * value
    return totals


def first_places(
    ballots: Sequence[Ballot],
    candidates: Sequence[str],
    *,
    weights: Mapping[str, float] | None = None,
    exclude_self: bool = False,
) -> dict[str, float]:
    """Weighted count of ballots that put each candidate first."""
    counts = dict.fromkeys(candidates, 0.0)
    for ballot in ballots:
        ranked = [c for c in ballot.ranking if c in counts and not (exclude_self and c in ballot.selves)]
        if ranked:
            counts[ranked[0]] += 1.0 if weights is None else weights.get(ballot.reviewer, 1.0)
    return counts


def borda_ranking(
    ballots: Sequence[Ballot],
    candidates: Sequence[str],
    *,
    weights: Mapping[str, float] | None = None,
    exclude_self: bool = False,
) -> list[str]:
    """Candidates best first by Borda score, ties broken as the module docstring says."""
    scores = borda_scores(ballots, candidates, weights=weights, exclude_self=exclude_self)
    firsts = first_places(ballots, candidates, weights=weights, exclude_self=exclude_self)
    return borda_order(candidates, scores, firsts)


def borda_order(
    candidates: Sequence[str], scores: Mapping[str, float], firsts: Mapping[str, float]
) -> list[str]:
    """``candidates`` best first: by score, then first places (both at ``TIE_DIGITS``), then
    their position in ``candidates``."""
    position = {c: i for i, c in enumerate(candidates)}
    return sorted(
        candidates,
        key=lambda c: (-round(scores[c], TIE_DIGITS), -round(firsts[c], TIE_DIGITS), position[c]),
    )
