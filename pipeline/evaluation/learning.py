"""Fitting the learned decision (``pipeline.learned``) on gold answers, chosen by cross-validation.

Examples: one per scorable calibration turn with two or more usable candidates — its
signals, each candidate's gold quality (token F1), its conversation, its domain (the
conversation's source, e.g. ``convquestions:books``) and its question bucket.

The model, per bucket: a conditional logit (softmax over the turn's candidates) fitted by
maximum likelihood of the soft target y_i = F1_i / sum_j F1_j with an L2 penalty
(mean loss + penalty/2 · |w|²), by Newton's method (convex, a few steps). Turns where
every candidate scores the same carry no information and are left out of the fit. Why
not a plain logistic regression on "is this the best candidate": that model would also
have to learn how hard each turn is; the conditional logit compares candidates only
with the others of their own turn, which is the decision, and it takes any number of
candidates. Features are scaled by their within-turn spread on the training turns, so
one penalty fits all.

Cross-validation: a rule's score is the mean gold F1 of the candidate it chooses on turns
it was not fitted on, under two schemes — five folds of whole conversations, and leaving
one domain out (when the bucket has two or more domains). Everything learned from data
(the member prior, the members' usual confidence, the weights) is fitted inside each
training fold. The choice: every candidate feature set × penalty; its score is the mean of
the schemes; among the configurations within ``TOLERANCE`` of the best, the fewest
features, then the largest penalty (few signals, strongly shrunk: what transfers). If the
chosen rule does not beat the member prior alone by more than ``TOLERANCE``, the bucket's
decision is the prior's: the ballots add nothing there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import fmean, pstdev
from typing import Any

import numpy as np

from pipeline.committee import Committee
from pipeline.evaluation.datasets import answerable
from pipeline.evaluation.metrics import best_f1
from pipeline.learned import (
    BUCKETS,
    BucketModel,
    LearnedModel,
    bucket_of,
    own_voters,
    score,
    voter_names,
)
from pipeline.plan import is_ballot
from pipeline.records import candidate_from_row, review_from_row
from pipeline.signals import REVIEW, TurnSignals, feature_rows, turn_signals

PENALTIES = (0.001, 0.01, 0.1, 1.0)
TOLERANCE = 0.0025  # 0.25 F1 points: differences smaller than this choose the simpler rule
FOLDS = 5
Quality = Callable[[str, Sequence[str]], float]


@dataclass(frozen=True)
class Example:
    """One calibration turn: its signals and each usable candidate's gold quality."""

    conversation: str
    domain: str
    bucket: str
    signals: TurnSignals
    quality: Mapping[str, float]


def examples_from_records(
    rows: Sequence[Mapping[str, Any]], committee: Committee, quality: Quality = best_f1
) -> list[Example]:
    """Examples from ``db.runs.run_records`` rows (questions without a scorable gold left out)."""
    voters = voter_names(committee)
    order = [m.name for m in committee.members]
    examples = []
    for row in rows:
        if not answerable(row["gold"]):
            continue
        candidates = [candidate_from_row(c) for c in row["candidates"]]
        reviews = [review_from_row(r) for r in row["reviews"] if is_ballot(r)]
        conversation = row["conversation"]
        passage = conversation.get("passage")
        signals = turn_signals(candidates, reviews, voters=voters, committee_order=order, passage=passage)
        if len(signals.members) < 2:
            continue
        scores = {m: quality(signals.texts[m], row["gold"]) for m in signals.members}
        domain = str(conversation.get("source") or "unknown")
        examples.append(Example(str(conversation["id"]), domain, bucket_of(bool(passage)), signals, scores))
    return examples


# --- fitting ----------------------------------------------------------------------------------


def member_prior(examples: Sequence[Example]) -> dict[str, float]:
    """Each member's mean quality over the turns it answered."""
    values: dict[str, list[float]] = {}
    for example in examples:
        for member, value in example.quality.items():
            values.setdefault(member, []).append(value)
    return {m: fmean(v) for m, v in values.items()}


def usual_confidence(examples: Sequence[Example], own: Mapping[str, str]) -> dict[str, list[float]]:
    """Each member's usual own-model score: (mean, sd) over the turns that have one."""
    values: dict[str, list[float]] = {}
    for example in examples:
        for member in example.signals.members:
            value = example.signals.reviews.get(own.get(member, ""), {}).get(member)
            if value is not None:
                values.setdefault(member, []).append(value)
    return {m: [fmean(v), pstdev(v)] for m, v in values.items() if len(v) > 1}


def fit_logit(rows: Sequence[np.ndarray], targets: Sequence[np.ndarray], penalty: float) -> np.ndarray:
    """Weights of the conditional logit: minimise mean_t CE(y_t, softmax(X_t w)) + penalty/2 |w|².

    ``rows``: one (candidates × features) matrix per turn; ``targets``: one distribution per turn.
    Turns with the same number of candidates are stacked, so each Newton step is a few array operations.
    """
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(rows):
        groups.setdefault(x.shape[0], []).append(i)
    stacks = [(np.stack([rows[i] for i in ix]), np.stack([targets[i] for i in ix])) for ix in groups.values()]
    width, n = rows[0].shape[1], len(rows)
    w = np.zeros(width)
    for _ in range(100):
        gradient, hessian = penalty * w, penalty * np.eye(width)
        for x, y in stacks:  # x: (turns, m, d), y: (turns, m)
            s = x @ w
            p = np.exp(s - s.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            gradient = gradient + np.einsum("tmd,tm->d", x, p - y) / n
            mean = np.einsum("tmd,tm->td", x, p)
            second = np.einsum("tmd,tm,tme->de", x, p, x) - np.einsum("td,te->de", mean, mean)
            hessian = hessian + second / n
        step = np.linalg.solve(hessian, gradient)
        w = w - step
        if np.abs(step).max() < 1e-9:
            break
    return w


def fit(
    examples: Sequence[Example], features: Sequence[str], penalty: float, own: Mapping[str, str]
) -> BucketModel:
    """A ``BucketModel`` deciding by ``features`` fitted on ``examples`` (the prior alone: no fit)."""
    prior = member_prior(examples)
    confidence = usual_confidence(examples, own)
    if tuple(features) == ("prior",):
        return BucketModel(("prior",), (1.0,), "prior", prior, confidence, penalty, len(examples))
    informative = [e for e in examples if len(set(e.quality.values())) > 1]
    matrices = [
        np.array(feature_rows(e.signals, features, prior=prior, confidence=confidence, own=own))
        for e in informative
    ]
    if not matrices:
        return BucketModel(("prior",), (1.0,), "prior", prior, confidence, penalty, len(examples))
    centred = np.vstack([m - m.mean(axis=0) for m in matrices])
    scale = np.where(centred.std(axis=0) > 0, centred.std(axis=0), 1.0)
    targets = []
    for e in informative:
        values = np.array([e.quality[m] for m in e.signals.members])
        targets.append(values / values.sum())
    w = fit_logit([m / scale for m in matrices], targets, penalty) / scale
    weights = tuple(float(v) for v in w)
    return BucketModel(tuple(features), weights, "learned", prior, confidence, penalty, len(examples))


def chosen_quality(model: BucketModel, examples: Sequence[Example], own: Mapping[str, str]) -> list[float]:
    """The gold quality of the candidate ``model`` chooses in each example (ties: committee order)."""
    out = []
    for example in examples:
        scores = score(example.signals, model, own)
        members = example.signals.members
        best = max(members, key=lambda m: (round(scores[m], 9), -members.index(m)))
        out.append(example.quality[best])
    return out


def borda_quality(examples: Sequence[Example]) -> list[float]:
    """The quality of the candidate uniform honest-voter Borda chooses (the ``borda`` feature)."""
    model = BucketModel(("borda",), (1.0,), "learned", {})
    return chosen_quality(model, examples, {})


# --- cross-validation -------------------------------------------------------------------------


def _fold_of(conversation: str) -> int:
    """A conversation's fold: stable across runs and machines (not Python's salted hash)."""
    return int(hashlib.sha256(conversation.encode()).hexdigest(), 16) % FOLDS


def splits(examples: Sequence[Example]) -> dict[str, list[tuple[list[Example], list[Example]]]]:
    """Train/test splits per scheme: folds of conversations; one domain out (2+ domains)."""
    schemes: dict[str, list[tuple[list[Example], list[Example]]]] = {"conversations": []}
    for fold in range(FOLDS):
        test = [e for e in examples if _fold_of(e.conversation) == fold]
        if test:
            schemes["conversations"].append(([e for e in examples if _fold_of(e.conversation) != fold], test))
    domains = sorted({e.domain for e in examples})
    if len(domains) > 1:
        schemes["domains"] = [
            ([e for e in examples if e.domain != d], [e for e in examples if e.domain == d]) for d in domains
        ]
    return schemes


def cross_validate(
    examples: Sequence[Example], features: Sequence[str], penalty: float, own: Mapping[str, str]
) -> dict[str, float]:
    """Mean chosen quality on held-out turns, per scheme (pooled over its folds)."""
    result = {}
    for scheme, folds in splits(examples).items():
        chosen: list[float] = []
        for train, test in folds:
            chosen += chosen_quality(fit(train, features, penalty, own), test, own)
        result[scheme] = fmean(chosen)
    return result


def candidate_features(examples: Sequence[Example]) -> list[tuple[str, ...]]:
    """The feature sets tried: the prior, the prior plus one signal, the prior plus the ballots,
    everything, and the ballots without the prior."""
    voters = sorted({v for e in examples for v in e.signals.reviews})
    reviews = tuple(f"{REVIEW}{v}" for v in voters)
    singles = ["consensus", "confidence", "borda", "length"]
    if any(e.signals.passage for e in examples):
        singles.append("overlap")
    sets: list[tuple[str, ...]] = [("prior",), *(("prior", s) for s in singles)]
    sets += [("prior", "consensus", "confidence"), ("prior", *reviews), ("prior", *singles, *reviews)]
    sets += [reviews, ("borda", "consensus")]
    return [s for s in dict.fromkeys(sets) if s]


@dataclass(frozen=True)
class Trial:
    """One configuration's cross-validated scores."""

    features: tuple[str, ...]
    penalty: float
    scores: dict[str, float]  # scheme -> mean chosen quality

    @property
    def score(self) -> float:
        return fmean(self.scores.values())


def fit_bucket(examples: Sequence[Example], own: Mapping[str, str]) -> tuple[BucketModel, list[Trial]]:
    """Choose features and penalty by cross-validation, fit on every example, say who decides."""
    trials = [
        Trial(features, penalty, cross_validate(examples, features, penalty, own))
        for features in candidate_features(examples)
        for penalty in (PENALTIES if features != ("prior",) else PENALTIES[:1])
    ]
    best = max(t.score for t in trials)
    close = [t for t in trials if t.score >= best - TOLERANCE]
    chosen = min(close, key=lambda t: (len(t.features), -t.penalty))
    prior = next(t for t in trials if t.features == ("prior",))
    borda = borda_quality(examples)
    model = fit(examples, chosen.features, chosen.penalty, own)
    if chosen.features == ("prior",) or chosen.score <= prior.score + TOLERANCE:
        model = fit(examples, ("prior",), 0.0, own)
    cv = {
        "schemes": sorted(chosen.scores),
        "domains": sorted({e.domain for e in examples}),
        "scores": {
            "learned": chosen.score,
            "prior": prior.score,
            "borda": fmean(borda),
            "random": fmean(fmean(e.quality.values()) for e in examples),
            "oracle": fmean(max(e.quality.values()) for e in examples),
        },
        "by_scheme": {"learned": chosen.scores, "prior": prior.scores},
        "chosen": {"features": list(chosen.features), "penalty": chosen.penalty},
    }
    return replace(model, cv=cv), trials


def fit_learned(
    examples: Sequence[Example],
    committee: Committee,
    *,
    version: int = 1,
    made: Mapping[str, Any] | None = None,
) -> tuple[LearnedModel, dict[str, list[Trial]]]:
    """The committee's learned decision: one model per bucket with examples; every trial, for reports."""
    own = own_voters(committee)
    buckets, trials = {}, {}
    for bucket in BUCKETS:
        mine = [e for e in examples if e.bucket == bucket]
        if len({e.conversation for e in mine}) >= FOLDS:  # too few conversations to cross-validate
            buckets[bucket], trials[bucket] = fit_bucket(mine, own)
    model = LearnedModel(committee.name, buckets, voter_names(committee), own, version, dict(made or {}))
    return model, trials
