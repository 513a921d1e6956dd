"""The learned decision: a small model that scores each candidate from every signal its turn stores.

A turn's signals (``pipeline.signals``: the member prior, each voter's score, Borda
points, own-model confidence, consensus, passage overlap, length) become one feature
row per usable candidate.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from pipeline.aggregate import Standings, excluded, review_groups
from pipeline.committee import Committee
from pipeline.policy import PolicyStore
from pipeline.records import CandidateRecord, ReviewRecord
from pipeline.signals import TurnSignals, feature_rows, turn_signals
from pipeline.store_keys import learned_key
from pipeline.wire import json_of, record_of

LIKELIHOOD_METHODS = ("likelihood", "likelihood-total")
BUCKETS = ("passage", "no_passage")
Decides = Literal["learned", "prior"]


def bucket_of(has_passage: bool) -> str:
    """The question bucket a model is fitted and read by (as the member prior's)."""
    return BUCKETS[0] if has_passage else BUCKETS[1]


# --- who votes as whom ------------------------------------------------------------------------


def voter_names(committee: Committee) -> dict[str, str]:
    """Reviewer -> its voter group's name: the group's first reviewer in committee order.

    Reviewers of one judgement key (``pipeline.aggregate.review_groups``) give one judgement,
    so they are one feature, whichever of them gave the ballot this turn.
    """
    return {r: group[0] for group in review_groups(committee.reviewers, committee) for r in group}


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
    voters: Mapping[str, str] = field(default_factory=dict)  # reviewer -> voter name, as fitted
    own: Mapping[str, str] = field(default_factory=dict)  # member -> the voter that gives its confidence
    version: int = 1
    made: Mapping[str, Any] = field(default_factory=dict)  # run, metric, when, protocol

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnedModel:
        return record_of(cls, data)

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
) -> tuple[Standings, dict[str, Any]]:
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
        decision = Standings(signals.members, dict.fromkeys(signals.members, 0.0), status, ballots, dropped)
        return decision, {"decided_by": why, "learned_version": model.version}
    scores = score(signals, fitted, model.own)
    ranking = sorted(signals.members, key=lambda m: (-round(scores[m], 9), signals.members.index(m)))
    status = "learned" if fitted.decides == "learned" else "prior"
    counted = ballots if fitted.decides == "learned" else 0
    decision = Standings(tuple(ranking), scores, status, counted, dropped)
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
    shipped = _packaged(committee.name)
    model = LearnedModel.from_json(shipped) if shipped is not None else None
    return model if model is not None and model.fits(committee) else None


@cache
def _packaged(name: str) -> dict[str, Any] | None:
    """The packaged file's content, read once per process (every turn of the committee asks)."""
    resource = files("pipeline") / "data" / f"learned-{name}.json"
    return json.loads(resource.read_text(encoding="utf-8")) if resource.is_file() else None


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
