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
- The member prior, the Borda count's one more ballot, is ``pipeline.prior``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pipeline.aggregate import voter_groups
from pipeline.borda import Ballot, borda_scores
from pipeline.committee import Committee
from pipeline.correlation import ballot_correlation
from pipeline.policy import PolicyStore
from pipeline.prior import prior_bucket
from pipeline.records import ReviewRecord
from pipeline.store_keys import calibration_key, feature_weights_key, trust_key

# "calibrated-passage": calibrated weights fitted apart for turns with and without a passage
WeightMode = Literal["uniform", "online", "calibrated", "calibrated-passage"]


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


class StoredValues(Protocol):
    """What ``stored_weights`` reads by key: the policy store, or `peerblend rerank`'s copy of it."""

    def get(self, key: str, /) -> Any: ...


def stored_weights(
    store: StoredValues | PolicyStore,
    committee: Committee,
    reviews: Sequence[ReviewRecord],
    *,
    has_passage: bool = False,
    mode: WeightMode | None = None,
) -> ReviewerWeights:
    """This turn's weights: read what the mode needs from ``store``, then ``select_weights``.

    The one rule, for live turns and for `peerblend rerank`. ``mode``: the committee's
    (``Committee.reviewer_weights``) unless given (a rerank rule's). Weighed: the reviewers whose
    ballot ranks a candidate; on a turn without one, every reviewer of the turn (so its note says
    what the weights would have been; no ballot counts either way).
    """
    chosen = mode or committee.reviewer_weights
    voters = [r.reviewer for r in reviews if r.ranking] or [r.reviewer for r in reviews]
    if chosen == "learned":  # the learned decision ranks (pipeline.learned); uniform Borda without one
        return ReviewerWeights(None, "uniform (the learned decision ranks where one is fitted)")
    if chosen == "uniform" or not voters:
        return UNIFORM
    if chosen == "online":
        return select_weights(chosen, voters, trust=store.get(trust_key(committee.name)))
    pooled = store.get(calibration_key(committee.name))
    if chosen == "calibrated-passage":
        by_feature = store.get(feature_weights_key(committee.name))
        return select_weights(chosen, voters, calibrated=feature_weights(by_feature, pooled, has_passage))
    return select_weights(chosen, voters, calibrated=pooled)


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
