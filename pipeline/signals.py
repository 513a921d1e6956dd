"""A turn's signals, as the learned decision (``pipeline.learned``) reads them.

A turn's signals (``TurnSignals``) become one feature row per usable candidate:

- ``prior``: its member's mean token F1 on the calibration turns of the same question
  bucket (passage / no passage): how good this member usually is here;
- ``review:<voter>``: one voter group's score of it (PMI, verification, agreement…;
  a free-text ballot's Borda points where a reviewer gives no scores), standardised
  within the turn (z over the turn's candidates): what each judge says of *this* answer;
- ``borda``: its honest-voter Borda points, each ballot scaled to [0, 1], mean over voters;
- ``confidence``: its own model's likelihood score of it (the voter group of a
  likelihood reviewer on the member's model), z-scored by that member's usual score on
  the calibration turns: is the member surer than usual;
- ``consensus``: its mean token F1 with the turn's other candidates;
- ``overlap``: the share of its tokens found in the passage (0 without a passage);
- ``length``: log(1 + words).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from statistics import fmean, pstdev

from pipeline.aggregate import usable
from pipeline.evaluation.metrics import normalize_answer, token_f1
from pipeline.records import CandidateRecord, ReviewRecord

REVIEW = "review:"  # prefix of a voter group's feature
SCORING_METHODS = ("likelihood", "likelihood-total", "verify", "consistency")


@dataclass(frozen=True)
class TurnSignals:
    """What one turn says about its usable candidates (members in committee order)."""

    members: tuple[str, ...]
    texts: Mapping[str, str]
    reviews: Mapping[str, Mapping[str, float]]  # voter -> member -> score, higher is better
    passage: str | None = None

    # The features that depend on the turn alone, computed once (a fit reads them many times).
    @cached_property
    def static(self) -> dict[str, dict[str, float]]:
        members = self.members
        columns = {f"{REVIEW}{voter}": _zscores(scores, members) for voter, scores in self.reviews.items()}
        points = [_points(scores, members) for scores in self.reviews.values()]
        columns["borda"] = {m: fmean(p[m] for p in points) if points else 0.5 for m in members}
        columns["consensus"] = {m: _consensus(self, m) for m in members}
        columns["overlap"] = {m: _overlap(self.texts[m], self.passage) for m in members}
        columns["length"] = {m: math.log1p(len(self.texts[m].split())) for m in members}
        return columns


def review_scores(review: ReviewRecord) -> dict[str, float]:
    """A ballot's score per member, higher is better: the stored scores of a scoring review
    (its ``raw`` line "member=value …"), else Borda points of its ranking (m − position)."""
    if review.method in SCORING_METHODS and review.raw:
        scores = {}
        for item in review.raw.splitlines()[0].split():
            member, _, value = item.rpartition("=")
            try:
                scores[member] = float(value)
            except ValueError:
                break
        else:
            if set(review.ranking) <= set(scores):
                return scores
    m = len(review.ranking)
    return {member: float(m - i) for i, member in enumerate(review.ranking)}


def turn_signals(
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    *,
    voters: Mapping[str, str],
    committee_order: Sequence[str],
    passage: str | None = None,
) -> TurnSignals:
    """The signals of a turn: one score map per voter group (its first counted ballot)."""
    order = {name: i for i, name in enumerate(committee_order)}
    pool = sorted((c.member for c in usable(candidates)), key=lambda m: order.get(m, len(order)))
    by_voter: dict[str, Mapping[str, float]] = {}
    for review in reviews:
        if review.ranking:
            voter = voters.get(review.reviewer, review.reviewer)
            by_voter.setdefault(voter, review_scores(review))
    texts = {c.member: c.text for c in candidates if c.member in pool}
    return TurnSignals(tuple(pool), texts, by_voter, passage)


def _zscores(values: Mapping[str, float], members: Sequence[str]) -> dict[str, float]:
    """Standardised within the turn; a member without a value, or a constant ballot, gets 0."""
    known = [values[m] for m in members if m in values and math.isfinite(values[m])]
    if len(known) < 2 or pstdev(known) == 0:
        return dict.fromkeys(members, 0.0)
    mean, sd = fmean(known), pstdev(known)
    return {m: (values[m] - mean) / sd if m in values and math.isfinite(values[m]) else 0.0 for m in members}


def _points(values: Mapping[str, float], members: Sequence[str]) -> dict[str, float]:
    """Borda points scaled to [0, 1] (best 1); members the ballot left out share the middle."""
    ranked = sorted((m for m in members if m in values), key=lambda m: -values[m])
    if len(members) < 2:
        return dict.fromkeys(members, 0.5)
    points = {m: 1.0 - i / (len(members) - 1) for i, m in enumerate(ranked)}
    return {m: points.get(m, 0.5) for m in members}


def _overlap(text: str, passage: str | None) -> float:
    words = normalize_answer(text).split()
    if not passage or not words:
        return 0.0
    vocabulary = set(normalize_answer(passage).split())
    return sum(w in vocabulary for w in words) / len(words)


def feature_rows(
    signals: TurnSignals,
    features: Sequence[str],
    *,
    prior: Mapping[str, float],
    confidence: Mapping[str, Sequence[float]],
    own: Mapping[str, str],
) -> list[list[float]]:
    """One row of ``features`` per member of ``signals.members`` (see the module docstring).

    ``prior``: member -> mean quality; ``confidence``: member -> (mean, sd) of its own
    model's score on the calibration turns; ``own``: member -> its own model's voter.
    """
    members = signals.members
    static = signals.static
    usual = fmean(prior.values()) if prior else 0.0
    columns: dict[str, dict[str, float]] = {}
    for name in features:
        if name == "prior":
            columns[name] = {m: float(prior.get(m, usual)) for m in members}
        elif name == "confidence":
            columns[name] = {m: _confidence(signals, m, confidence, own) for m in members}
        elif name in static:
            columns[name] = static[name]
        elif name.startswith(REVIEW):  # a voter without a ballot this turn: no information
            columns[name] = dict.fromkeys(members, 0.0)
        else:
            raise ValueError(f"unknown feature {name!r}")
    return [[columns[name][m] for name in features] for m in members]


def _confidence(
    signals: TurnSignals, member: str, stats: Mapping[str, Sequence[float]], own: Mapping[str, str]
) -> float:
    value = signals.reviews.get(own.get(member, ""), {}).get(member)
    mean, sd = (list(stats.get(member, ())) + [0.0, 0.0])[:2]
    if value is None or not math.isfinite(value) or sd <= 0:
        return 0.0
    return (value - mean) / sd


def _consensus(signals: TurnSignals, member: str) -> float:
    others = [signals.texts[m] for m in signals.members if m != member]
    return fmean(token_f1(signals.texts[member], o) for o in others) if others else 0.0
