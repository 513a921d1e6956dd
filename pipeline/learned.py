"""The learned decision: a small model that scores each candidate from every signal its turn stores.

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

The model is a conditional logit: P(candidate i is the turn's best) = softmax_i(w · x_i)
over the turn's usable candidates. Only differences within a turn matter, which is
exactly the decision (which of *these* answers), and a turn may have any number of
candidates. ``pipeline.evaluation.learning`` fits w per bucket on gold answers, chooses
the features and the L2 penalty by cross-validation over conversations and leaving one
domain out, and keeps the member prior alone (``decides = "prior"``) where the ballots
add nothing over it. Scoring here is plain Python: a client or worker needs no numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from statistics import fmean, pstdev
from typing import Any, Literal

from pipeline.aggregate import Decision, excluded, judgement_keys, usable
from pipeline.committee import Committee
from pipeline.evaluation.metrics import normalize_answer, token_f1
from pipeline.policy import PolicyStore
from pipeline.records import CandidateRecord, ReviewRecord

REVIEW = "review:"  # prefix of a voter group's feature
BASE_FEATURES = ("prior", "borda", "confidence", "consensus", "overlap", "length")
SCORING_METHODS = ("likelihood", "likelihood-total", "verify", "consistency")
LIKELIHOOD_METHODS = ("likelihood", "likelihood-total")
BUCKETS = ("passage", "no_passage")
Decides = Literal["learned", "prior"]


def learned_key(committee: str) -> str:
    """Where `peerblend calibrate` stores a committee's learned decision (the policy store)."""
    return f"{committee}:learned"


def bucket_of(has_passage: bool) -> str:
    """The question bucket a model is fitted and read by (as the member prior's)."""
    return BUCKETS[0] if has_passage else BUCKETS[1]


# --- who votes as whom ------------------------------------------------------------------------


def voter_names(committee: Committee) -> dict[str, str]:
    """Reviewer -> its voter group's name: the group's first reviewer in committee order.

    Reviewers of one judgement key (``pipeline.aggregate.judgement_key``) give one judgement,
    so they are one feature, whichever of them gave the ballot this turn.
    """
    first: dict[str, str] = {}
    names = {}
    for reviewer, key in judgement_keys(committee).items():
        names[reviewer] = first.setdefault(key, reviewer)
    return names


def own_voters(committee: Committee) -> dict[str, str]:
    """Member -> the voter whose likelihood score of its answer is the member's own model's (confidence)."""
    voters = voter_names(committee)
    own = {}
    for member in committee.members:
        for reviewer in committee.members:
            same_model = (reviewer.backend, reviewer.model) == (member.backend, member.model)
            if reviewer.name in voters and same_model and reviewer.review_method in LIKELIHOOD_METHODS:
                own[member.name] = voters[reviewer.name]
                break
    return own


# --- a turn's signals -------------------------------------------------------------------------


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


# --- the fitted model -------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketModel:
    """The decision fitted for one question bucket.

    ``decides``: "learned" (score with ``weights`` over ``features``) or "prior" (the
    cross-validation found the ballots add nothing over the member prior here).
    ``cv``: cross-validated mean F1 of the chosen candidate per rule ("learned", "prior",
    "borda", "random", "oracle") and how they were measured.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    decides: Decides
    prior: Mapping[str, float]
    confidence: Mapping[str, Sequence[float]] = field(default_factory=dict)
    penalty: float = 0.0
    turns: int = 0
    cv: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float | None:
        """The cross-validated F1 (0–1) of the learned decision minus the prior's; None if not measured."""
        scores = self.cv.get("scores", {})
        if "learned" not in scores or "prior" not in scores:
            return None
        return float(scores["learned"]) - float(scores["prior"])

    def why(self, bucket: str) -> str:
        """One sentence: which rule decides this bucket, and the cross-validated reason."""
        scores = self.cv.get("scores", {})
        learned, prior = scores.get("learned"), scores.get("prior")
        measured = (
            f" (cross-validated F1: learned {100 * learned:.1f}, prior {100 * prior:.1f})"
            if learned is not None and prior is not None
            else ""
        )
        if self.decides == "prior":
            return f"member prior: for {bucket} questions the ballots add nothing over it{measured}"
        return f"learned ({', '.join(self.features)}) for {bucket} questions{measured}"


@dataclass(frozen=True)
class LearnedModel:
    """A committee's learned decision, one ``BucketModel`` per question bucket, versioned."""

    committee: str
    buckets: Mapping[str, BucketModel]
    voters: Mapping[str, str]  # reviewer -> voter name, as fitted
    own: Mapping[str, str]  # member -> the voter that gives its confidence
    version: int = 1
    made: Mapping[str, Any] = field(default_factory=dict)  # run, metric, when, protocol

    def to_json(self) -> dict[str, Any]:
        return {
            "committee": self.committee,
            "version": self.version,
            "made": dict(self.made),
            "voters": dict(self.voters),
            "own": dict(self.own),
            "buckets": {
                name: {
                    "features": list(b.features),
                    "weights": list(b.weights),
                    "decides": b.decides,
                    "prior": dict(b.prior),
                    "confidence": {m: list(v) for m, v in b.confidence.items()},
                    "penalty": b.penalty,
                    "turns": b.turns,
                    "cv": dict(b.cv),
                }
                for name, b in self.buckets.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnedModel:
        buckets = {
            name: BucketModel(
                features=tuple(b["features"]),
                weights=tuple(float(w) for w in b["weights"]),
                decides=b["decides"],
                prior={str(m): float(q) for m, q in b["prior"].items()},
                confidence={str(m): [float(x) for x in v] for m, v in b.get("confidence", {}).items()},
                penalty=float(b.get("penalty", 0.0)),
                turns=int(b.get("turns", 0)),
                cv=dict(b.get("cv", {})),
            )
            for name, b in data["buckets"].items()
        }
        return cls(
            committee=str(data["committee"]),
            buckets=buckets,
            voters=dict(data.get("voters", {})),
            own=dict(data.get("own", {})),
            version=int(data.get("version", 1)),
            made=dict(data.get("made", {})),
        )

    def fits(self, committee: Committee) -> bool:
        """Whether this model was fitted for ``committee``: same name, same voters."""
        return self.committee == committee.name and dict(self.voters) == voter_names(committee)


def score(signals: TurnSignals, model: BucketModel, own: Mapping[str, str]) -> dict[str, float]:
    """Each member's score under the bucket's rule (higher is better)."""
    if model.decides == "prior":
        return {m: float(model.prior.get(m, 0.0)) for m in signals.members}
    rows = feature_rows(signals, model.features, prior=model.prior, confidence=model.confidence, own=own)
    return {
        m: sum(w * x for w, x in zip(model.weights, row, strict=True))
        for m, row in zip(signals.members, rows, strict=True)
    }


def decide_learned(
    candidates: Sequence[CandidateRecord],
    reviews: Sequence[ReviewRecord],
    model: LearnedModel,
    *,
    committee_order: Sequence[str],
    passage: str | None,
) -> tuple[Decision, dict[str, Any]]:
    """Rank the usable candidates by the learned model of the turn's bucket, and the record fields.

    Status "learned" (the model scored them) or "prior" (the bucket's rule is the prior);
    ties keep committee order. A turn with fewer than two usable candidates is "single" /
    "no_candidates" as everywhere.
    """
    signals = turn_signals(
        candidates, reviews, voters=model.voters, committee_order=committee_order, passage=passage
    )
    dropped = excluded(candidates)
    bucket = bucket_of(bool(passage))
    fitted = model.buckets.get(bucket)
    ballots = sum(1 for r in reviews if r.ranking)
    if len(signals.members) < 2 or fitted is None:
        status = "single" if signals.members else "no_candidates"
        why = f"no learned model for {bucket} questions" if fitted is None else "nothing to decide"
        decision = Decision(signals.members, dict.fromkeys(signals.members, 0.0), status, ballots, dropped)
        return decision, {"decided_by": why, "learned_version": model.version}
    scores = score(signals, fitted, model.own)
    ranking = sorted(signals.members, key=lambda m: (-round(scores[m], 9), signals.members.index(m)))
    status = "learned" if fitted.decides == "learned" else "prior"
    counted = ballots if fitted.decides == "learned" else 0
    decision = Decision(tuple(ranking), scores, status, counted, dropped)
    record = {"decided_by": fitted.why(bucket), "learned_version": model.version, "learned_bucket": bucket}
    return decision, record


def route(
    model: LearnedModel | None,
    generators: Sequence[str],
    *,
    has_passage: bool,
    top: int = 1,
    min_gain: float = 0.0,
) -> tuple[str, ...]:
    """The members a routed turn asks: its ``top`` best generators by the bucket's prior, where
    the bucket's decision is the prior's or the learned decision's cross-validated gain over the
    prior is below ``min_gain`` (F1, 0–1: the judges are not worth their cost there); else () —
    ask everyone, and review.
    """
    fitted = model.buckets.get(bucket_of(has_passage)) if model is not None else None
    if fitted is None:
        return ()
    if fitted.decides == "learned" and (fitted.gain is None or fitted.gain >= min_gain):
        return ()
    known = [g for g in generators if g in fitted.prior]
    return tuple(sorted(known, key=lambda g: -fitted.prior[g])[:top])


# --- where a turn finds its model --------------------------------------------------------------


def packaged_learned(committee: Committee) -> LearnedModel | None:
    """The learned decision shipped with peerblend for ``committee`` (``pipeline/data/learned-<name>.json``,
    fitted on the shared dev data: see its ``made``), if there is one and it fits the committee."""
    resource = files("pipeline") / "data" / f"learned-{committee.name}.json"
    if not resource.is_file():
        return None
    model = LearnedModel.from_json(json.loads(resource.read_text(encoding="utf-8")))
    return model if model.fits(committee) else None


def stored_learned(store: PolicyStore, committee: Committee) -> tuple[LearnedModel | None, str]:
    """The committee's learned decision: the one `peerblend calibrate` stored, else the packaged
    one; and a note saying which (or why none)."""
    value = store.get(learned_key(committee.name))
    if value:
        model = LearnedModel.from_json(value)
        if model.fits(committee):
            return model, f"calibrated (v{model.version}, run {model.made.get('run', '?')})"
        return None, "the stored learned decision was fitted for other reviewers: run `peerblend calibrate`"
    shipped = packaged_learned(committee)
    if shipped is not None:
        return shipped, f"packaged (v{shipped.version}, {shipped.made.get('run', '?')})"
    return None, "no learned decision fitted for this committee (run `peerblend calibrate`)"
