"""Reviewer weights for the Borda count: online trust and calibrated trust.

- Online trust: a reviewer's weight is its mean agreement with the others so far
  (Spearman correlation between its ballot and the leave-one-out Borda consensus
  of the other reviewers), shrunk towards 1 by a prior of one pseudo-turn and
  floored at 0. Needs no gold answers.
- Calibrated trust: a reviewer's weight is its mean Spearman correlation with the
  candidates' true quality (token F1 against gold by default) on a calibration
  split, floored at 0.
- Blind judges: when every weight is 0 (calibration found no reviewer informative, or
  online trust fell to 0 for all), the ballots get no weight at all: the member prior
  decides, and committee order where there is no prior. Never uniform: that would let
  judges known to be blind outvote the prior exactly where they are blind.
- Honest voters: reviewers of one judgement key (``pipeline.aggregate``) do not
  count as each other's "others" in online agreement (they would agree by construction).
- Member prior (committee ``member_prior = true``): each member's mean quality on the
  calibration split (``fit_prior``), per question feature ("passage": the turn has a
  grounding passage, "no_passage"; "all" pooled). Its ballot's weight is its own
  calibrated trust (the mean Spearman correlation of the prior's order with the
  candidates' quality, floored at 0) when reviewer weights are calibrated, else 1:
  one voter. Stored per committee under ``prior_key``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.aggregate import MemberPrior, voter_groups
from pipeline.borda import Ballot, borda_scores
from pipeline.committee import Committee
from pipeline.policy import PolicyStore
from pipeline.records import ReviewRecord
from pipeline.store_keys import calibration_key, feature_weights_key, prior_key, trust_key

# "calibrated-passage": calibrated weights fitted apart for turns with and without a passage
WeightMode = Literal["uniform", "online", "calibrated", "calibrated-passage"]
CALIBRATED_MODES = ("calibrated", "calibrated-passage")


@dataclass(frozen=True)
class ReviewerWeights:
    """The Borda weight of each reviewer this turn (None: uniform), and how they were chosen."""

    weights: dict[str, float] | None
    note: str


UNIFORM = ReviewerWeights(None, "uniform")
# The note of weights that are all 0: the ballots count for nothing (see the module docstring).
BLIND = "every reviewer weighs 0, so the ballots get no weight: the member prior decides (committee order without one)"


def select_weights(
    mode: WeightMode,
    reviewers: Sequence[str],
    *,
    trust: Mapping[str, Sequence[float]] | None = None,
    calibrated: Mapping[str, float] | None = None,
) -> ReviewerWeights:
    """The weights of ``reviewers`` under ``mode``, with the fallbacks said in the note.

    - ``online``: ``trust_weights`` of the stored agreement statistics (none yet: the prior, 1).
    - ``calibrated``, ``calibrated-passage``: the stored weights (for the latter, the
      caller passes the turn's feature bucket's); a reviewer missing from them (the committee
      changed since calibration) gets the mean of the stored weights, and says so;
      nothing stored falls back to uniform.
    - Weights that are all zero: the ballots get no weight (``BLIND``), said in the note.
    """
    if mode == "uniform" or not reviewers:
        return UNIFORM
    if mode == "online":
        chosen, note = trust_weights(trust or {}, reviewers), "online trust"
    elif not calibrated:
        return ReviewerWeights(
            None, "calibrated weights requested but none stored (run `peerblend calibrate`): uniform"
        )
    else:
        stored = [float(v) for v in calibrated.values()]
        fallback = sum(stored) / len(stored)
        missing = [r for r in reviewers if r not in calibrated]
        chosen = {r: float(calibrated.get(r, fallback)) for r in reviewers}
        note = "calibrated trust" if mode == "calibrated" else "calibrated trust (by passage)"
        if missing:
            note += f"; not calibrated, given the mean {fallback:.3g}: {', '.join(missing)}"
    if not any(chosen.values()):
        return ReviewerWeights(dict.fromkeys(chosen, 0.0), f"{note}: {BLIND}")
    return ReviewerWeights(chosen, note)


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (1 = smallest), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when undefined (fewer than 3 items or a constant side)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / (vx * vy) ** 0.5


def ballot_correlation(ranking: Sequence[str], values: Mapping[str, float]) -> float | None:
    """How well a ballot (best first) agrees with ``values`` (higher is better) on the members it ranked."""
    ranked = [m for m in ranking if m in values]
    return spearman([-float(i) for i in range(len(ranked))], [values[m] for m in ranked])


def consensus_agreement(
    ballots: Sequence[Ballot], candidates: Sequence[str], voters: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Each reviewer's agreement with the Borda consensus of the *other* voters.

    ``voters``: reviewer -> judgement key; ballots of the same key are not "others".
    """
    group_of = {r: group for group in voter_groups([b.reviewer for b in ballots], voters) for r in group}
    agreement = {}
    for ballot in ballots:
        others = [b for b in ballots if b.reviewer not in group_of[ballot.reviewer]]
        if not others:
            continue
        value = ballot_correlation(ballot.ranking, borda_scores(others, candidates))
        if value is not None:
            agreement[ballot.reviewer] = value
    return agreement


def trust_weights(
    stats: Mapping[str, Sequence[float]], reviewers: Iterable[str], prior: float = 1.0
) -> dict[str, float]:
    """Weights from accumulated [sum of agreements, count] per reviewer: (sum + prior) / (count + prior), >= 0."""
    weights = {}
    for reviewer in reviewers:
        total, count = stats.get(reviewer, (0.0, 0.0))
        weights[reviewer] = max(0.0, (total + prior) / (count + prior))
    return weights


def add_agreement(
    stats: Mapping[str, Sequence[float]], agreement: Mapping[str, float]
) -> dict[str, list[float]]:
    """Fold one turn's agreements into [sum, count] per reviewer."""
    merged = {r: [float(v[0]), float(v[1])] for r, v in stats.items()}
    for reviewer, value in agreement.items():
        total, count = merged.get(reviewer, [0.0, 0.0])
        merged[reviewer] = [total + value, count + 1]
    return merged


def calibrate(turns: Iterable[tuple[Sequence[Ballot], Mapping[str, float]]]) -> dict[str, float]:
    """Calibrated weights from (ballots, true quality per candidate) of gold-annotated turns: each
    reviewer's mean Spearman correlation with the quality, floored at 0 (all 0: blind judges)."""
    sums: dict[str, list[float]] = {}
    for ballots, quality in turns:
        for ballot in ballots:
            value = ballot_correlation(ballot.ranking, quality)
            if value is not None:
                total, count = sums.get(ballot.reviewer, [0.0, 0.0])
                sums[ballot.reviewer] = [total + value, count + 1]
    return {r: max(0.0, total / count) for r, (total, count) in sums.items() if count}


def stored_weights(
    store: PolicyStore, committee: Committee, reviews: Sequence[ReviewRecord], *, has_passage: bool = False
) -> ReviewerWeights:
    """This turn's weights: read what the committee's mode needs from ``store``, then ``select_weights``."""
    mode = committee.reviewer_weights
    voters = [r.reviewer for r in reviews if r.ranking] or [r.reviewer for r in reviews]
    if mode == "learned":  # the learned decision ranks (pipeline.learned); uniform Borda without one
        return ReviewerWeights(None, "uniform (the learned decision ranks where one is fitted)")
    if mode == "uniform" or not voters:
        return UNIFORM
    if mode == "online":
        return select_weights(mode, voters, trust=store.get(trust_key(committee.name)))
    pooled = store.get(calibration_key(committee.name))
    if mode == "calibrated-passage":
        by_feature = store.get(feature_weights_key(committee.name))
        return select_weights(mode, voters, calibrated=feature_weights(by_feature, pooled, has_passage))
    return select_weights(mode, voters, calibrated=pooled)


def feature_weights(
    by_feature: Mapping[str, Mapping[str, float]] | None,
    pooled: Mapping[str, float] | None,
    has_passage: bool,
) -> Mapping[str, float] | None:
    """The calibrated weights for a turn's feature bucket; the pooled ones where that bucket has none."""
    return (by_feature or {}).get(prior_bucket(has_passage)) or pooled


def learn_trust(
    store: PolicyStore,
    committee_name: str,
    reviews: Sequence[ReviewRecord],
    pool: Sequence[str],
    voters: Mapping[str, str] | None = None,
) -> None:
    """Fold one turn's agreement of each reviewer with the other voters into the committee's online trust."""
    ballots = [Ballot(r.reviewer, r.ranking) for r in reviews if r.ranking]
    agreement = consensus_agreement(ballots, list(pool), voters)
    if agreement:
        store.update(trust_key(committee_name), lambda v: add_agreement(v or {}, agreement))


# --- the member prior -------------------------------------------------------------------------

PRIOR_BUCKETS = ("passage", "no_passage")
POOLED = "all"


def prior_bucket(has_passage: bool) -> str:
    """The question feature the prior is fitted and read by."""
    return PRIOR_BUCKETS[0] if has_passage else PRIOR_BUCKETS[1]


def fit_prior(turns: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per bucket (and ``all``): each member's mean quality, the prior's calibrated weight, the turn count.

    ``turns``: (bucket, quality per usable candidate, higher is better) of gold-annotated turns.
    """
    fitted: dict[str, dict[str, Any]] = {}
    for bucket in (*PRIOR_BUCKETS, POOLED):
        mine = [quality for b, quality in turns if bucket in (b, POOLED)]  # POOLED takes every turn
        if not mine:
            continue
        sums: dict[str, list[float]] = {}
        for quality in mine:
            for member, value in quality.items():
                total, count = sums.get(member, [0.0, 0.0])
                sums[member] = [total + value, count + 1]
        prior = MemberPrior({m: total / count for m, (total, count) in sums.items()})
        agreement = [ballot_correlation(prior.ballot(list(q)).ranking, q) for q in mine]
        measured = [a for a in agreement if a is not None]
        weight = max(0.0, sum(measured) / len(measured)) if measured else 0.0
        fitted[bucket] = {"quality": prior.quality, "weight": weight, "turns": len(mine)}
    return fitted


def select_prior(
    stored: Mapping[str, object] | None, *, has_passage: bool, calibrated_weight: bool
) -> MemberPrior | None:
    """The prior for a turn from a stored ``fit_prior`` value: its feature's bucket, else the pooled one."""
    buckets = dict(stored or {})
    bucket = prior_bucket(has_passage)
    chosen = buckets.get(bucket) or buckets.get(POOLED)
    if not isinstance(chosen, Mapping):
        return None
    used = bucket if bucket in buckets else POOLED
    quality = {str(m): float(q) for m, q in dict(chosen["quality"]).items()}
    weight = float(chosen["weight"]) if calibrated_weight else 1.0
    how = "calibrated weight" if calibrated_weight else "weight 1 (one voter)"
    return MemberPrior(quality, weight, f"member prior ({used}, {chosen['turns']} turns), {how}")


def stored_prior(store: PolicyStore, committee: Committee, *, has_passage: bool) -> MemberPrior | None:
    """This turn's member prior, when the committee asks for one and a calibration stored it."""
    if not committee.member_prior:
        return None
    stored = store.get(prior_key(committee.name)) or {}
    prior = select_prior(
        stored.get("buckets"),
        has_passage=has_passage,
        calibrated_weight=committee.reviewer_weights in CALIBRATED_MODES,
    )
    if prior is None:
        return MemberPrior({}, 0.0, "member prior requested but none stored (run `peerblend calibrate`)")
    return prior
